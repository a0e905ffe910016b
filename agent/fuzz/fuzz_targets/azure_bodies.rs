//! Every Azure body the agent parses: the Scheduled Events document (mapped to notices
//! for a VM named in it) and `compute/name`; also the providerID the name may come from.
#![no_main]

use jiff::{SignedDuration, Timestamp};
use libfuzzer_sys::fuzz_target;
use reclaim_agent::imds::azure::{
    AzureRules, announced_from, parse_compute_name, parse_document, vm_name_from_provider_id,
};

fuzz_target!(|data: &[u8]| {
    let Some((&path, body)) = data.split_first() else {
        return;
    };
    let body = String::from_utf8_lossy(body);
    let now = Timestamp::from_second(1_800_000_000).unwrap();
    match path % 3 {
        0 => {
            if let Ok(document) = parse_document(&body) {
                let rules = AzureRules {
                    vm_name: None,
                    vm_name_hint: None,
                    include_freeze: path & 0x80 != 0,
                    preemption_notice: SignedDuration::from_secs(30),
                };
                let vm = document
                    .events
                    .first()
                    .and_then(|e| e.resources.first().cloned())
                    .unwrap_or_default();
                let report = announced_from(&document, &vm, &rules, now);
                assert!(report.announced.len() <= document.events.len());
            }
        }
        1 => {
            if let Ok(name) = parse_compute_name(&body) {
                assert!(!name.is_empty() && name.trim() == name);
            }
        }
        _ => {
            if let Some(name) = vm_name_from_provider_id(&body) {
                assert!(!name.is_empty());
            }
        }
    }
});
