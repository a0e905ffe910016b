//! The classifier's memory of which nodes carried an interruption notice.
//!
//! A reclaimed node can be gone before the classifier sees its pods fail, so each
//! notice is remembered for a retention window after it was last seen. The pods' own
//! `reclaim.dev/interruption` annotation covers what this memory loses on a restart.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reclaim_model::Notice;

pub struct NodeNotices {
    retention: Duration,
    by_node: HashMap<String, (Notice, Instant)>,
}

impl NodeNotices {
    pub fn new(retention: Duration) -> NodeNotices {
        NodeNotices {
            retention,
            by_node: HashMap::new(),
        }
    }

    /// Records what `node` carries now. A node whose notice was lifted (a canceled
    /// maintenance) is forgotten; a deleted node is kept until the retention ends.
    pub fn observe(&mut self, node: &str, notice: Option<Notice>) {
        match notice {
            Some(notice) => {
                self.by_node
                    .insert(node.to_owned(), (notice, Instant::now()));
            }
            None => {
                self.by_node.remove(node);
            }
        }
    }

    pub fn get(&mut self, node: &str) -> Option<&Notice> {
        let retention = self.retention;
        self.by_node
            .retain(|_, (_, seen)| seen.elapsed() <= retention);
        self.by_node.get(node).map(|(notice, _)| notice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reclaim_model::{NoticeKind, Provider};

    fn notice() -> Notice {
        Notice {
            provider: Provider::Gcp,
            kind: NoticeKind::SpotInterruption,
            event_id: "gce-preempted".into(),
            notice_time: "2026-01-01T10:00:00Z".parse().unwrap(),
            deadline: None,
            detected_at: "2026-01-01T10:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn notices_are_kept_for_the_retention_and_lifted_ones_forgotten() {
        let mut memory = NodeNotices::new(Duration::from_millis(50));
        memory.observe("a", Some(notice()));
        memory.observe("b", Some(notice()));
        memory.observe("b", None);
        assert!(memory.get("a").is_some());
        assert!(memory.get("b").is_none());
        std::thread::sleep(Duration::from_millis(80));
        assert!(memory.get("a").is_none(), "forgotten after the retention");
    }
}
