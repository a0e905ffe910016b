//! The agent's watch on its own Node: which version of the Node is current, and the
//! drill annotation (see [`crate::drill`]).
//!
//! One metadata-only watch, narrowed to this Node by a field selector: the API server
//! sends something only when the Node changes, so an agent at rest costs one long-lived
//! request (renewed every [`WATCH_TIMEOUT_SECONDS`]) and one object's metadata in memory.
//! The guard keeps the Node it last read and reads it again only when this watch reports
//! another resourceVersion: a notice that stays announced for days (a rebalance
//! recommendation served until the instance dies, maintenance announced ahead) costs no
//! request per poll. Without the watch (not yet listed, or refused) the guard reads the
//! Node each time it decides, as it must.

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Client, ResourceExt};
use reclaim_model::keys::DRILL_ANNOTATION;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The server ends each watch after this long; kept under the watch client's read timeout.
const WATCH_TIMEOUT_SECONDS: u32 = 45;

/// The Node as the watch last saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Seen {
    /// `None` until the watch has seen the Node (or after it was deleted).
    resource_version: Option<String>,
    drill: Option<String>,
}

/// The agent's own Node, as watched.
pub struct OwnNode {
    seen: watch::Receiver<Seen>,
    /// Bumped when the drill annotation changes: what wakes the guard.
    drill_changes: watch::Receiver<u64>,
    watch_task: JoinHandle<()>,
}

impl OwnNode {
    /// Watches `node` with `client` (a client made for watches).
    pub fn watch(client: Client, node: &str) -> OwnNode {
        let (sender, seen) = watch::channel(Seen::default());
        let (drill_sender, drill_changes) = watch::channel(0_u64);
        let nodes = Api::<PartialObjectMeta<Node>>::all(client);
        let config = watcher::Config::default()
            .fields(&format!("metadata.name={node}"))
            .timeout(WATCH_TIMEOUT_SECONDS);
        let task = tokio::spawn(async move {
            let mut stream = watcher(nodes, config).default_backoff().boxed();
            while let Some(event) = stream.next().await {
                let now = match event {
                    Ok(Event::Apply(node) | Event::InitApply(node)) => Seen {
                        resource_version: node.resource_version(),
                        drill: node.annotations().get(DRILL_ANNOTATION).cloned(),
                    },
                    Ok(Event::Delete(_)) => Seen::default(),
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, hint = "the agent needs nodes list and watch; without the watch it reads its Node on every decision and sees no drills", "watching the node failed; retrying with backoff");
                        continue;
                    }
                };
                let drill_changed = sender.borrow().drill != now.drill;
                sender.send_replace(now);
                if drill_changed {
                    drill_sender.send_modify(|n| *n += 1);
                }
            }
        });
        OwnNode {
            seen,
            drill_changes,
            watch_task: task,
        }
    }

    /// The resourceVersion of the Node as last seen; `None` when not known.
    pub fn resource_version(&self) -> Option<String> {
        self.seen.borrow().resource_version.clone()
    }

    /// Whether the node carries the drill annotation, as last seen.
    pub fn drill_annotated(&self) -> bool {
        self.seen.borrow().drill.is_some()
    }

    /// Waits until the drill annotation changes.
    pub async fn drill_changed(&mut self) {
        if self.drill_changes.changed().await.is_err() {
            std::future::pending().await
        }
    }
}

impl Drop for OwnNode {
    fn drop(&mut self) {
        self.watch_task.abort();
    }
}
