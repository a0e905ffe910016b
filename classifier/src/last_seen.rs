//! The pods the agent labelled, as last seen, so that one deleted while the watch was
//! down (an API outage) is still found: a watch that lists again reports what exists,
//! not what vanished meanwhile, and such a pod's Job would never get its verdict.
//! Only labelled pods are kept: a handful per interrupted node. Pure.

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

#[derive(Debug, Default)]
pub struct LastSeen {
    pods: HashMap<String, Pod>,
    /// The uids seen by the list in progress, if one is.
    relisting: Option<HashSet<String>>,
}

impl LastSeen {
    pub fn applied(&mut self, pod: Pod) {
        if let Some(seen) = self.relisting.as_mut() {
            seen.insert(pod.uid().unwrap_or_default());
        }
        self.pods.insert(pod.uid().unwrap_or_default(), pod);
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
        last.applied(pod("a"));
        last.applied(pod("b"));
        assert!(
            last.relist_done().is_empty(),
            "the first list finds nothing gone"
        );
        last.applied(pod("c"));
        last.deleted(&pod("c"));
        // The watch breaks; b is deleted meanwhile; the watch lists again.
        last.relist_started();
        last.applied(pod("a"));
        let vanished = last.relist_done();
        assert_eq!(vanished.len(), 1);
        assert_eq!(vanished[0].name_any(), "pod-b");
        last.relist_started();
        last.applied(pod("a"));
        assert!(last.relist_done().is_empty(), "reported once");
    }
}
