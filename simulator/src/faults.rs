//! Injected faults: what a metadata service does on a bad day.

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
}

/// Faults queued for the next requests, in order.
#[derive(Debug, Default)]
pub struct Faults {
    queue: VecDeque<Fault>,
}

impl Faults {
    /// Applies `fault` to the next `count` requests (after those already queued).
    pub fn inject(&mut self, fault: Fault, count: usize) {
        self.queue.extend(std::iter::repeat_n(fault, count));
    }

    /// Takes the next fault if `applies` says it applies to the request at hand, so a
    /// fault is never used up by a request it does not change.
    pub fn take_if(&mut self, applies: impl Fn(&Fault) -> bool) -> Option<Fault> {
        if self.queue.front().is_some_and(applies) {
            self.queue.pop_front()
        } else {
            None
        }
    }

    pub fn clear(&mut self) {
        self.queue.clear();
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
/// error page by `page`), if one is next in line.
pub(crate) async fn delay_or_fail(
    state: &Shared,
    page: fn(StatusCode) -> Response,
) -> Option<Response> {
    let delay = state
        .lock()
        .expect("simulator lock")
        .faults
        .take_if(|f| f.delay().is_some());
    if let Some(delay) = delay.as_ref().and_then(Fault::delay) {
        tokio::time::sleep(delay).await;
    }
    // A failing service fails whatever the request carries.
    let failure = state
        .lock()
        .expect("simulator lock")
        .faults
        .take_if(|f| matches!(f, Fault::Status(_)));
    failure.map(|f| match f {
        Fault::Status(code) => {
            page(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        }
        _ => unreachable!("only status faults are taken here"),
    })
}
