//! The agent's watch on its own Node, for the drill annotation (see [`crate::drill`]).
//!
//! One metadata-only watch, narrowed to this Node by a field selector: the API server
//! sends something only when the Node's metadata changes, so an idle agent costs one
//! long-lived request (renewed every [`WATCH_TIMEOUT_SECONDS`]) and one object in memory.
//! It only wakes the guard up; the guard reads the Node itself before deciding.

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

/// The drill annotation's value, as the watch last saw it.
pub struct DrillAnnotation {
    values: Option<watch::Receiver<Option<String>>>,
    watch_task: Option<JoinHandle<()>>,
}

impl DrillAnnotation {
    /// Watches `node` with `client` (a client made for watches); `None`: drills are off.
    pub fn watch(client: Option<Client>, node: &str) -> DrillAnnotation {
        let Some(client) = client else {
            return DrillAnnotation {
                values: None,
                watch_task: None,
            };
        };
        let (sender, values) = watch::channel(None);
        let nodes = Api::<PartialObjectMeta<Node>>::all(client);
        let config = watcher::Config::default()
            .fields(&format!("metadata.name={node}"))
            .timeout(WATCH_TIMEOUT_SECONDS);
        let task = tokio::spawn(async move {
            let mut stream = watcher(nodes, config).default_backoff().boxed();
            while let Some(event) = stream.next().await {
                match event {
                    Ok(Event::Apply(node) | Event::InitApply(node)) => {
                        let value = node.annotations().get(DRILL_ANNOTATION).cloned();
                        sender.send_if_modified(|seen| {
                            let changed = *seen != value;
                            *seen = value;
                            changed
                        });
                    }
                    Ok(Event::Delete(_)) => {
                        sender.send_if_modified(|seen| seen.take().is_some());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, hint = "the agent needs nodes list and watch for drills; real notices are not affected", "watching the node for drills failed; retrying with backoff")
                    }
                }
            }
        });
        DrillAnnotation {
            values: Some(values),
            watch_task: Some(task),
        }
    }

    /// Whether the node carries the annotation, as last seen.
    pub fn present(&self) -> bool {
        self.values.as_ref().is_some_and(|v| v.borrow().is_some())
    }

    pub fn enabled(&self) -> bool {
        self.values.is_some()
    }

    /// Waits until the annotation changes; never returns when drills are off.
    pub async fn changed(&mut self) {
        if let Some(values) = &mut self.values
            && values.changed().await.is_ok()
        {
            return;
        }
        std::future::pending().await
    }
}

impl Drop for DrillAnnotation {
    fn drop(&mut self) {
        if let Some(task) = &self.watch_task {
            task.abort();
        }
    }
}
