//! Failed pods already judged "not spot" or "unknown": every later update of such a pod
//! (its deletion, a label change) would otherwise be judged, counted and logged again.
//! Forgotten when the pod is deleted; bounded, so pods kept forever cannot grow it.

use std::collections::HashSet;

/// At 40 bytes a uid, a few MiB at most.
const CAPACITY: usize = 50_000;

#[derive(Default)]
pub struct Judged {
    uids: HashSet<String>,
}

impl Judged {
    pub fn contains(&self, uid: &str) -> bool {
        self.uids.contains(uid)
    }

    /// Remembers `uid`; past the capacity, starts over (the cost: a repeated log line).
    pub fn insert(&mut self, uid: String) {
        if self.uids.len() >= CAPACITY {
            self.uids.clear();
        }
        self.uids.insert(uid);
    }

    /// Forgets `uid`; whether it was there.
    pub fn remove(&mut self, uid: &str) -> bool {
        self.uids.remove(uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_until_removed() {
        let mut judged = Judged::default();
        judged.insert("a".into());
        assert!(judged.contains("a"));
        assert!(judged.remove("a"));
        assert!(!judged.contains("a") && !judged.remove("a"));
    }

    #[test]
    fn stays_bounded() {
        let mut judged = Judged::default();
        for i in 0..=CAPACITY {
            judged.insert(i.to_string());
        }
        assert!(judged.uids.len() <= CAPACITY);
        assert!(judged.contains(&CAPACITY.to_string()));
    }
}
