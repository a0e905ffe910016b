//! The pods the agent labelled, as last seen, so that one deleted while the watch was
//! down (an API outage) is still found: a watch that lists again reports what exists,
//! not what vanished meanwhile, and such a pod's Job would never get its verdict.
//! Only labelled pods are kept: a handful per interrupted node. Anyone who may write a
//! pod can add the label, so the memory is bounded ([`MAX_REMEMBERED`]) and each pod is
//! kept without its managed fields. Pure.

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

/// Labelled pods remembered at most; past this a new one is not kept (and counted).
pub const MAX_REMEMBERED: usize = 20_000;

#[derive(Debug, Default)]
pub struct LastSeen {
    pods: HashMap<String, Pod>,
    /// The uids seen by the list in progress, if one is.
    relisting: Option<HashSet<String>>,
}

impl LastSeen {
    /// Remembers `pod` as last seen; false when the memory is full and it was not kept.
    #[must_use]
    pub fn applied(&mut self, mut pod: Pod) -> bool {
        let uid = pod.uid().unwrap_or_default();
        if let Some(seen) = self.relisting.as_mut() {
            seen.insert(uid.clone());
        }
        if self.pods.len() >= MAX_REMEMBERED && !self.pods.contains_key(&uid) {
            return false;
        }
        pod.metadata.managed_fields = None;
        self.pods.insert(uid, pod);
        true
    }

    pub fn deleted(&mut self, pod: &Pod) {
        self.pods.remove(&pod.uid().unwrap_or_default());
    }

    /// A (re)list starts.
    pub fn relist_started(&mut self) {
        self.relisting = Some(HashSet::new());
    }

    /// The (re)list is complete: returns the pods last seen that it no longer holds,
    /// in their last state (deleted while nobody was watching).
    pub fn relist_done(&mut self) -> Vec<Pod> {
        let Some(seen) = self.relisting.take() else {
            return Vec::new();
        };
        let vanished: Vec<String> = self
            .pods
            .keys()
            .filter(|uid| !seen.contains(*uid))
            .cloned()
            .collect();
        vanished
            .iter()
            .filter_map(|uid| self.pods.remove(uid))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.uid = Some(uid.into());
        pod.metadata.name = Some(format!("pod-{uid}"));
        pod
    }

    #[test]
    fn a_pod_gone_between_two_lists_is_reported_once_with_its_last_state() {
        let mut last = LastSeen::default();
        last.relist_started();
        assert!(last.applied(pod("a")) && last.applied(pod("b")));
        assert!(
            last.relist_done().is_empty(),
            "the first list finds nothing gone"
        );
        assert!(last.applied(pod("c")));
        last.deleted(&pod("c"));
        // The watch breaks; b is deleted meanwhile; the watch lists again.
        last.relist_started();
        assert!(last.applied(pod("a")));
        let vanished = last.relist_done();
        assert_eq!(vanished.len(), 1);
        assert_eq!(vanished[0].name_any(), "pod-b");
        last.relist_started();
        assert!(last.applied(pod("a")));
        assert!(last.relist_done().is_empty(), "reported once");
    }

    #[test]
    fn the_memory_is_bounded_and_a_pod_kept_is_still_updated() {
        let mut last = LastSeen::default();
        for i in 0..MAX_REMEMBERED {
            assert!(last.applied(pod(&i.to_string())));
        }
        assert!(!last.applied(pod("flood")), "one more is not kept");
        assert!(last.applied(pod("7")), "one already kept is updated");
        last.deleted(&pod("7"));
        assert!(last.applied(pod("real")), "room again once one is gone");
    }
}
