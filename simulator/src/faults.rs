//! Injected faults: what a metadata service does on a bad day.

use std::collections::VecDeque;
use std::time::Duration;

use serde::Deserialize;

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
