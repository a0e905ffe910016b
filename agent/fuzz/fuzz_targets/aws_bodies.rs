//! Every AWS IMDS body the agent parses, through the same functions the pollers use:
//! the first byte picks the path, the rest is the body (decoded as the HTTP client does).
#![no_main]

use jiff::Timestamp;
use libfuzzer_sys::fuzz_target;
use reclaim_agent::imds::aws::{
    lifecycle_report, maintenance_report, parse_instance_action, parse_lifecycle_state,
    parse_maintenance, parse_rebalance, rebalance_report, spot_report,
};

fuzz_target!(|data: &[u8]| {
    let Some((&path, body)) = data.split_first() else {
        return;
    };
    let body = String::from_utf8_lossy(body);
    let now = Timestamp::from_second(1_800_000_000).unwrap();
    match path % 4 {
        0 => {
            if let Ok(action) = parse_instance_action(&body) {
                let report = spot_report(Some(action.clone()));
                assert_eq!(report.announced[0].deadline, Some(action.time));
                assert!(report.announced[0].notice_time <= action.time);
            }
        }
        1 => {
            if let Ok(notice_time) = parse_rebalance(&body) {
                assert_eq!(rebalance_report(Some(notice_time)).announced.len(), 1);
            }
        }
        2 => {
            if let Ok(events) = parse_maintenance(&body) {
                let report = maintenance_report(&events, now);
                assert!(report.announced.len() + report.ended.len() <= events.len());
            }
        }
        _ => {
            if let Ok(state) = parse_lifecycle_state(&body) {
                assert!(!state.is_empty() && !state.contains(char::is_whitespace));
                lifecycle_report(Some(&state), now);
            }
        }
    }
});
