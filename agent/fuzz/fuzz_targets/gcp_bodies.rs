//! Every GCP metadata answer the agent parses: the `preempted` and `maintenance-event`
//! values, and the ETag header it sends back in a URL.
#![no_main]

use jiff::{SignedDuration, Timestamp};
use libfuzzer_sys::fuzz_target;
use reclaim_agent::imds::gcp::{
    PREEMPTION, TERMINATING_MAINTENANCE, parse_etag, parse_value, value_report,
};

fuzz_target!(|data: &[u8]| {
    let Some((&path, body)) = data.split_first() else {
        return;
    };
    let now = Timestamp::from_second(1_800_000_000).unwrap();
    let notice = SignedDuration::from_secs(30);
    match path % 3 {
        0 | 1 => {
            let key = if path % 3 == 0 { "preempted" } else { "maintenance-event" };
            let body = String::from_utf8_lossy(body);
            if let Some(value) = parse_value(key, &body) {
                let meaning = if key == "preempted" { &PREEMPTION } else { &TERMINATING_MAINTENANCE };
                let report = value_report(meaning, Some((&value, now)), notice, now);
                assert_eq!(report.announced.len() + report.ended.len(), 1);
            }
        }
        _ => {
            if let Some(etag) = parse_etag(body) {
                // It goes into a query string as it is: nothing that could end or add a parameter.
                assert!(etag.bytes().all(|b| b.is_ascii_alphanumeric()));
            }
        }
    }
});
