//! Injected faults: what a metadata service does on a bad day.
//!
//! A fault applies to the next matching requests (`count` of them, in order) or to every
//! matching request until cleared (persistent). A fault may be scoped to one path (any
//! request whose path contains the given text, e.g. `spot/instance-action`), so one path
//! can fail forever while the others answer.

use std::collections::VecDeque;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use crate::Shared;

/// One fault, applied to one request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Answer with this status and the provider's error page.
    Status(u16),
    /// Answer 200 with a body that is not what the path promises.
    Garbage,
    /// Answer correctly, but only after this long (a client timeout, typically).
    DelayMs(u64),
    /// Answer as though nothing were announced (AWS: the 404 page; Azure: a document
    /// without events), as a glitch or a metadata service restart does. Not applied on
    /// GCP, whose values are always there.
    Absent,
}

/// A fault and the requests it applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    fault: Fault,
    /// Applies to requests whose path contains this; `None`: to every request.
    path: Option<String>,
}

impl Rule {
    fn matches(&self, request_path: &str) -> bool {
        self.path
            .as_deref()
            .is_none_or(|p| request_path.contains(p))
    }
}

/// Faults queued for the next requests, in order, and faults that stay.
#[derive(Debug, Default)]
pub struct Faults {
    queue: VecDeque<Rule>,
    persistent: Vec<Rule>,
    /// When a queued fault was last served: once none is pending, the moment the
    /// service first could answer correctly again (the end of a storm).
    pub last_served: Option<jiff::Timestamp>,
}

impl Faults {
    /// Applies `fault` to the next `count` requests (after those already queued).
    pub fn inject(&mut self, fault: Fault, count: usize) {
        self.inject_on(None, fault, count);
    }

    /// Applies `fault` to the next `count` requests whose path contains `path`.
    pub fn inject_on(&mut self, path: Option<&str>, fault: Fault, count: usize) {
        let rule = Rule {
            fault,
            path: path.map(str::to_owned),
        };
        self.queue.extend(std::iter::repeat_n(rule, count));
    }

    /// Applies `fault` to every request whose path contains `path` (every request when
    /// `None`) until [`Faults::clear`].
    pub fn persist(&mut self, path: Option<&str>, fault: Fault) {
        self.persistent.push(Rule {
            fault,
            path: path.map(str::to_owned),
        });
    }

    /// The fault for the request at `request_path`, if the next one in line for it is
    /// one that `applies` says changes it; a fault is never used up by a request it does
    /// not change.
    pub fn take_if(
        &mut self,
        request_path: &str,
        applies: impl Fn(&Fault) -> bool,
    ) -> Option<Fault> {
        if let Some(rule) = self
            .persistent
            .iter()
            .find(|r| r.matches(request_path) && applies(&r.fault))
        {
            return Some(rule.fault.clone());
        }
        let next = self.queue.iter().position(|r| r.matches(request_path))?;
        if applies(&self.queue[next].fault) {
            self.last_served = Some(jiff::Timestamp::now());
            self.queue.remove(next).map(|r| r.fault)
        } else {
            None
        }
    }

    /// Queued faults not used up yet.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    pub fn clear(&mut self) {
        self.queue.clear();
        self.persistent.clear();
    }
}

impl Fault {
    pub fn delay(&self) -> Option<Duration> {
        match self {
            Fault::DelayMs(ms) => Some(Duration::from_millis(*ms)),
            _ => None,
        }
    }
}

/// Serves an injected delay, then an injected error status (rendered as the provider's
/// error page by `page`), if one is next in line for `request_path`.
pub(crate) async fn delay_or_fail(
    state: &Shared,
    request_path: &str,
    page: fn(StatusCode) -> Response,
) -> Option<Response> {
    let delay = state
        .lock()
        .expect("simulator lock")
        .faults
        .take_if(request_path, |f| f.delay().is_some());
    if let Some(delay) = delay.as_ref().and_then(Fault::delay) {
        tokio::time::sleep(delay).await;
    }
    // A failing service fails whatever the request carries.
    let failure = state
        .lock()
        .expect("simulator lock")
        .faults
        .take_if(request_path, |f| matches!(f, Fault::Status(_)));
    failure.map(|f| match f {
        Fault::Status(code) => {
            page(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        }
        _ => unreachable!("only status faults are taken here"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPOT: &str = "/latest/meta-data/spot/instance-action";
    const MAINTENANCE: &str = "/latest/meta-data/events/maintenance/scheduled";

    #[test]
    fn scoped_faults_hit_only_their_path_and_persistent_ones_never_run_out() {
        let mut faults = Faults::default();
        faults.persist(Some("maintenance/scheduled"), Fault::Status(500));
        faults.inject_on(Some("spot/instance-action"), Fault::Absent, 2);
        let is = |f: &Fault, want: &Fault| f == want;
        for _ in 0..5 {
            assert_eq!(
                faults.take_if(MAINTENANCE, |f| is(f, &Fault::Status(500))),
                Some(Fault::Status(500))
            );
        }
        assert_eq!(faults.take_if(SPOT, |f| is(f, &Fault::Status(500))), None);
        assert_eq!(
            faults.take_if(SPOT, |f| is(f, &Fault::Absent)),
            Some(Fault::Absent)
        );
        assert_eq!(
            faults.take_if(SPOT, |f| is(f, &Fault::Absent)),
            Some(Fault::Absent)
        );
        assert_eq!(
            faults.take_if(SPOT, |f| is(f, &Fault::Absent)),
            None,
            "two answers only"
        );
        faults.clear();
        assert_eq!(faults.take_if(MAINTENANCE, |_| true), None);
    }

    #[test]
    fn unscoped_faults_apply_to_the_next_requests_in_order() {
        let mut faults = Faults::default();
        faults.inject(Fault::Status(503), 1);
        faults.inject(Fault::Garbage, 1);
        assert_eq!(
            faults.take_if(SPOT, |f| *f == Fault::Garbage),
            None,
            "the 503 is first"
        );
        assert_eq!(
            faults.take_if(MAINTENANCE, |f| matches!(f, Fault::Status(_))),
            Some(Fault::Status(503))
        );
        assert_eq!(
            faults.take_if(SPOT, |f| *f == Fault::Garbage),
            Some(Fault::Garbage)
        );
    }
}
