//! The watches: failed pods, pods the agent labelled, Node metadata; each failed pod
//! judged by the rules ([`crate::verdict`]) and its verdict handed to [`crate::writer`].
//!
//! Only pods the server reports as Failed (a field selector) and pods the agent labelled
//! `reclaim.dev/interrupted` (a label selector) are watched in full; Nodes only through
//! their metadata, so memory and traffic do not grow with the number of healthy pods.
//! A verdict is written once: an object that already carries `reclaim.dev/cause` is left
//! alone, and every write is conditioned on the resourceVersion that was read. The
//! verdict annotations are output, never input: a pod that carries them (written by an
//! earlier run, or by whoever created the pod) is judged again from the evidence, so a
//! pod's creator cannot have its Job marked by writing them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher as watch;
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource, ResourceExt};
use reclaim_model::keys::{
    CAUSE_ANNOTATION, INTERRUPTED_LABEL, NODE_NOTICE_ANNOTATION, POD_INTERRUPTION_ANNOTATION,
};
use reclaim_model::{Evidence, Notice, PodInterruption};
use reclaim_service::endpoints::Health;
use tokio::sync::{Mutex, watch as signal};

use crate::judged::Judged;
use crate::last_seen::LastSeen;
use crate::metrics::ClassifierMetrics;
use crate::notices::NodeNotices;
use crate::progress::WatchProgress;
use crate::record::{add_verdicts, collect_garbage, collection_interval};
use crate::retries::{Pending, Retries};
use crate::verdict::{NO_NODE_NOTICE, Verdict, classify, failure_of};
use crate::writer::{Marked, mark, mark_owners, record_event};

/// What the controller remembers across its runs: a replica that loses the Lease and
/// takes it again (an API outage) keeps the verdicts still to write, the notices seen,
/// and the labelled pods last seen, so a pod deleted meanwhile is still judged.
pub struct Memory {
    notices: Mutex<NodeNotices>,
    judged: Mutex<Judged>,
    retries: Mutex<Retries>,
    last_seen: Mutex<LastSeen>,
}

impl Memory {
    pub fn new(retention: Duration) -> Memory {
        Memory {
            notices: Mutex::new(NodeNotices::new(retention)),
            judged: Mutex::new(Judged::default()),
            retries: Mutex::new(Retries::default()),
            last_seen: Mutex::new(LastSeen::default()),
        }
    }
}

/// What the controller watches and remembers.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a node's notice is remembered after it was last seen.
    pub retention: Duration,
    /// Interruption records older than this are deleted.
    pub record_retention: Duration,
    /// Classify only the pods of this namespace (`None`: every namespace).
    pub namespace: Option<String>,
    pub metrics: Arc<ClassifierMetrics>,
    /// What `/readyz` and `/healthz` report.
    pub health: Arc<Health>,
}

impl Settings {
    fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match &self.namespace {
            Some(namespace) => Api::namespaced(client.clone(), namespace),
            None => Api::all(client.clone()),
        }
    }
}

/// Watches and writes verdicts (as field manager `writer`) until `shutdown` turns true.
pub async fn run(
    client: Client,
    settings: &Settings,
    writer: &str,
    memory: &Memory,
    mut shutdown: signal::Receiver<bool>,
) {
    let Memory {
        notices,
        judged,
        retries,
        last_seen,
    } = memory;
    // Watching is work `/healthz` follows only while this runs (it is dropped when the
    // leadership is lost).
    let _watching = Watching(settings.health.clone());
    let progress =
        std::sync::Mutex::new(WatchProgress::new(&[NODES, FAILED_PODS, INTERRUPTED_PODS]));
    // Each watch reports here how it goes; `InitDone` means it has listed.
    let went = |name: &'static str, ok: bool, listed: bool| {
        let mut progress = progress.lock().expect("progress lock");
        match (ok, listed) {
            (true, true) => progress.listed(name),
            (true, false) => progress.answered(name),
            (false, _) => progress.failed(name, Instant::now()),
        }
    };
    let retry_later = |uid: String, work: Pending, attempts: u32| {
        let retries = &retries;
        async move {
            let mut retries = retries.lock().await;
            retries.schedule(uid, work, attempts, Instant::now());
            settings.metrics.pending(retries.len());
        }
    };
    let nodes = async {
        let nodes = Api::<PartialObjectMeta<Node>>::all(client.clone());
        let mut stream = watch(
            nodes,
            watcher::Config::default().timeout(WATCH_TIMEOUT_SECONDS),
        )
        .default_backoff()
        .boxed();
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::Apply(node) | Event::InitApply(node)) => {
                    went(NODES, true, false);
                    notices
                        .lock()
                        .await
                        .observe(&node.name_any(), notice_of(&node));
                }
                Ok(Event::InitDone) => went(NODES, true, true),
                // `Init` starts a (re)list, which may still fail: not an answer.
                Ok(_) => {}
                Err(e) => {
                    went(NODES, false, false);
                    tracing::warn!(error = %e, "watching nodes failed; retrying with backoff")
                }
            }
        }
    };
    let pods = async {
        let failed = watcher::Config::default()
            .timeout(WATCH_TIMEOUT_SECONDS)
            .fields("status.phase=Failed");
        let mut stream = watch(settings.api::<Pod>(&client), failed)
            .default_backoff()
            .boxed();
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::Apply(pod) | Event::InitApply(pod)) => {
                    went(FAILED_PODS, true, false);
                    let uid = pod.uid().unwrap_or_default();
                    if judged.lock().await.contains(&uid) {
                        continue;
                    }
                    match handle(&client, writer, &settings.metrics, &pod, notices).await {
                        Ok(Written::Verdict) => {}
                        Ok(Written::Nothing) => judged.lock().await.insert(uid),
                        Err(e) => {
                            tracing::warn!(pod = %pod.name_any(), error = %e, "could not write the verdict; retrying with backoff until it is written");
                            retry_later(uid, Pending::Failed(pod.clone()), 1).await;
                        }
                    }
                }
                // The deletion of a labelled pod is the other watch's to forget.
                Ok(Event::Delete(pod)) if !pod.labels().contains_key(INTERRUPTED_LABEL) => {
                    judged.lock().await.remove(&pod.uid().unwrap_or_default());
                }
                Ok(Event::InitDone) => went(FAILED_PODS, true, true),
                Ok(_) => {}
                Err(e) => {
                    went(FAILED_PODS, false, false);
                    tracing::warn!(error = %e, "watching failed pods failed; retrying with backoff")
                }
            }
        }
    };
    // A pod evicted by the agent is often deleted before it is ever reported Failed: its
    // owners are judged from the deleted pod's last state. Only pods the agent labelled
    // are watched, so this costs nothing for the healthy rest.
    let deleted = async {
        let interrupted = watcher::Config::default()
            .timeout(WATCH_TIMEOUT_SECONDS)
            .labels(INTERRUPTED_LABEL);
        let mut stream = watch(settings.api::<Pod>(&client), interrupted)
            .default_backoff()
            .boxed();
        let mut last_seen = last_seen.lock().await;
        let (client, judged, retry_later) = (&client, &judged, &retry_later);
        let on_deleted = move |pod: Pod| async move {
            // Judged when it failed: nothing more to say.
            if judged.lock().await.remove(&pod.uid().unwrap_or_default()) {
                return;
            }
            if let Err(e) = handle_deleted(client, writer, &settings.metrics, &pod).await {
                tracing::warn!(pod = %pod.name_any(), error = %e, "could not mark the deleted pod's owners; retrying with backoff until they are");
                retry_later(
                    pod.uid().unwrap_or_default(),
                    Pending::Deleted(pod.clone()),
                    1,
                )
                .await;
            }
        };
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::Delete(pod)) => {
                    went(INTERRUPTED_PODS, true, false);
                    last_seen.deleted(&pod);
                    on_deleted(pod).await;
                }
                Ok(Event::Apply(pod)) | Ok(Event::InitApply(pod)) => last_seen.applied(pod),
                Ok(Event::Init) => last_seen.relist_started(),
                Ok(Event::InitDone) => {
                    went(INTERRUPTED_PODS, true, true);
                    for pod in last_seen.relist_done() {
                        tracing::info!(pod = %pod_key(&pod), "deleted while the watch was down; judged from its last state");
                        on_deleted(pod).await;
                    }
                }
                Err(e) => {
                    went(INTERRUPTED_PODS, false, false);
                    tracing::warn!(error = %e, "watching interrupted pods failed; retrying with backoff")
                }
            }
        }
    };
    // Verdicts whose write failed: a Failed pod gets no next update, a deleted pod never
    // comes back, so they are retried here until written or left with nothing to write on.
    let retry = async {
        loop {
            tokio::time::sleep(RETRY_TICK).await;
            let due = retries.lock().await.take_due(Instant::now());
            for (uid, work, attempts) in due {
                let written = match &work {
                    Pending::Failed(pod) => {
                        retry_failed(&client, writer, &settings.metrics, pod, notices).await
                    }
                    Pending::Deleted(pod) => {
                        handle_deleted(&client, writer, &settings.metrics, pod).await
                    }
                };
                match written {
                    Ok(()) => {
                        tracing::info!(pod = %uid, attempts, "verdict written after retrying")
                    }
                    Err(kube::Error::Api(status)) if status.code == 404 => {
                        tracing::info!(pod = %uid, "nothing left to write the verdict on (gone)")
                    }
                    Err(e) => {
                        tracing::warn!(pod = %uid, attempts, error = %e, "writing the verdict failed again; retrying with backoff");
                        retry_later(uid, work, attempts + 1).await;
                    }
                }
            }
            settings.metrics.pending(retries.lock().await.len());
        }
    };
    // Records past their retention go; a failure is tried again next time.
    let collect = async {
        loop {
            match collect_garbage(&client, settings.record_retention).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(
                    deleted,
                    retention = ?settings.record_retention,
                    "deleted Interruption records past their retention"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, hint = %reclaim_service::client::hint(&e, "interruptions.reclaim.dev list and delete"), "could not delete old Interruption records; trying again later")
                }
            }
            tokio::time::sleep(collection_interval(settings.record_retention)).await;
        }
    };
    // Ready once every watch has listed; healthy while none fails without a break.
    let report = async {
        loop {
            {
                let progress = progress.lock().expect("progress lock");
                match progress.ready() {
                    Ok(()) => settings.health.set_ready(),
                    Err(waiting) => settings.health.set_not_ready(format!("leading; {waiting}")),
                }
                let stalled = progress.stalled(Instant::now());
                if stalled.is_empty() {
                    settings.health.work_progressed();
                } else {
                    tracing::warn!(watches = ?stalled, "watches failing without a break; /healthz reports it");
                }
            }
            tokio::time::sleep(REPORT_EVERY).await;
        }
    };
    tokio::select! {
        _ = shutdown.changed() => {}
        _ = nodes => {}
        _ = pods => {}
        _ = deleted => {}
        _ = retry => {}
        _ = collect => {}
        _ = report => {}
    }
}

/// Ends the watching work for `/healthz` however [`run`] ends.
struct Watching(Arc<Health>);

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.work_ended();
    }
}

const NODES: &str = "nodes";
const FAILED_PODS: &str = "failed pods";
const INTERRUPTED_PODS: &str = "interrupted pods";
/// How often the watches' state is reported to `/readyz` and `/healthz`.
const REPORT_EVERY: Duration = Duration::from_secs(2);

/// The server ends each watch after this long, even with nothing to say, so a watch
/// whose connection was black-holed is noticed by the client's read timeout
/// (`ReadTimeout::Watches`, longer than this) and started again.
const WATCH_TIMEOUT_SECONDS: u32 = 45;

/// How often due retries are looked for.
const RETRY_TICK: Duration = Duration::from_secs(1);

/// Retries a Failed pod's verdict from a fresh read of the pod (the one seen may be
/// stale: its resourceVersion would conflict). A pod gone since (deleted, or replaced
/// under its name) is judged from its last state, for its owners.
async fn retry_failed(
    client: &Client,
    writer: &str,
    metrics: &ClassifierMetrics,
    seen: &Pod,
    notices: &Mutex<NodeNotices>,
) -> kube::Result<()> {
    let pods = Api::<Pod>::namespaced(client.clone(), &seen.namespace().unwrap_or_default());
    match pods.get_opt(&seen.name_any()).await? {
        Some(fresh) if fresh.uid() == seen.uid() => {
            handle(client, writer, metrics, &fresh, notices)
                .await
                .map(|_| ())
        }
        _ => owners_of_gone(client, writer, metrics, seen, notices).await,
    }
}

/// Marks the owners of a Failed pod that is gone before its verdict was written, judged
/// from its last state with its own record or its node's remembered notice: its Job
/// outlives it, so there is still something to write the verdict on.
async fn owners_of_gone(
    client: &Client,
    writer: &str,
    metrics: &ClassifierMetrics,
    pod: &Pod,
    notices: &Mutex<NodeNotices>,
) -> kube::Result<()> {
    let record = interruption_of(pod);
    let node = node_of(pod);
    let remembered = notices.lock().await.get(&node).cloned();
    let verdict = classify(
        &failure_of(pod, true),
        record.as_ref(),
        remembered.as_ref().map(|n| (node.as_str(), n)),
        Timestamp::now(),
    );
    let Verdict::SpotCaused(evidence) = verdict else {
        return Ok(());
    };
    metrics.spot_caused(&pod.namespace().unwrap_or_default());
    mark_owners_of(client, writer, pod, evidence).await
}

/// Marks the owners of `pod` (gone, or marked already) with `evidence` naming it.
async fn mark_owners_of(
    client: &Client,
    writer: &str,
    pod: &Pod,
    evidence: Evidence,
) -> kube::Result<()> {
    let evidence = Evidence {
        pod: Some(pod_key(pod)),
        ..evidence
    };
    let namespace = pod.namespace().unwrap_or_default();
    let marked = mark_owners(
        client,
        writer,
        &namespace,
        pod.owner_references(),
        &evidence,
    )
    .await?;
    add_verdicts(client, writer, &evidence, &marked).await
}

/// After a marked pod: marks its owners, then lists them and the pod in the notice's record.
async fn mark_owners_and_list(
    client: &Client,
    writer: &str,
    pod: &Pod,
    evidence: &Evidence,
) -> kube::Result<()> {
    let namespace = pod.namespace().unwrap_or_default();
    let owners = mark_owners(client, writer, &namespace, pod.owner_references(), evidence).await?;
    let itself = Marked {
        kind: "Pod".into(),
        namespace,
        name: pod.name_any(),
    };
    let marked: Vec<Marked> = std::iter::once(itself).chain(owners).collect();
    add_verdicts(client, writer, evidence, &marked).await
}

/// The node a pod was bound to (`""` when none).
fn node_of(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

/// The notice `node` carries now, if it still exists and carries one.
async fn read_node_notice(client: &Client, node: &str) -> kube::Result<Option<Notice>> {
    let nodes = Api::<Node>::all(client.clone());
    Ok(nodes
        .get_metadata_opt(node)
        .await?
        .and_then(|n| notice_of(&n)))
}

/// The agent's `reclaim.dev/interruption` record on `pod`, if it wrote one.
fn interruption_of(pod: &Pod) -> Option<PodInterruption> {
    pod.annotations()
        .get(POD_INTERRUPTION_ANNOTATION)
        .and_then(|t| PodInterruption::from_json(t).ok())
}

/// `namespace/name`, as logs and evidence name a pod.
fn pod_key(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

fn notice_of(node: &PartialObjectMeta<Node>) -> Option<Notice> {
    node.annotations()
        .get(NODE_NOTICE_ANNOTATION)
        .and_then(|t| Notice::from_json(t).ok())
}

/// Whether `pod`, reported gone by the label-selector watch, still exists: a pod that
/// merely lost the agent's label (an undo) leaves that watch as if deleted. A real
/// deletion carries a deletionTimestamp; only without one is the pod read (by name, then
/// its UID compared: a pod recreated under the same name is another pod).
async fn still_there(client: &Client, pod: &Pod) -> kube::Result<bool> {
    if pod.metadata.deletion_timestamp.is_some() {
        return Ok(false);
    }
    let pods = Api::<Pod>::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    Ok(pods
        .get_metadata_opt(&pod.name_any())
        .await?
        .is_some_and(|now| now.uid() == pod.uid()))
}

/// A pod deleted while the agent was draining its node: its owners get the verdict,
/// unless its last status shows a failure of its own (OOMKilled during its grace period).
async fn handle_deleted(
    client: &Client,
    writer: &str,
    metrics: &ClassifierMetrics,
    pod: &Pod,
) -> kube::Result<()> {
    let Some(record) = interruption_of(pod) else {
        return Ok(());
    };
    let name = pod_key(pod);
    if still_there(client, pod).await? {
        tracing::info!(pod = %name, "the agent's label left a pod that stays (an undo); not a deletion");
        return Ok(());
    }
    // A pod that reached Failed was counted by the failed-pod watch already.
    let uncounted = pod.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Failed");
    match classify(
        &failure_of(pod, true),
        Some(&record),
        None,
        Timestamp::now(),
    ) {
        Verdict::SpotCaused(evidence) => {
            if uncounted {
                metrics.spot_caused(&pod.namespace().unwrap_or_default());
            }
            mark_owners_of(client, writer, pod, evidence).await
        }
        Verdict::NotSpot(why) => {
            if uncounted {
                metrics.verdict("not_spot");
            }
            tracing::info!(pod = %name, why, "deleted during the drain, but not because of it; nothing written");
            Ok(())
        }
        Verdict::Unknown(_) => Ok(()),
    }
}

/// What [`handle`] wrote about a failed pod.
enum Written {
    Verdict,
    Nothing,
}

/// Classifies one failed pod and, when spot-caused, marks it and its owners.
async fn handle(
    client: &Client,
    writer: &str,
    metrics: &ClassifierMetrics,
    pod: &Pod,
    notices: &Mutex<NodeNotices>,
) -> kube::Result<Written> {
    let namespace = pod.namespace().unwrap_or_default();
    let record = interruption_of(pod);
    let failure = failure_of(pod, false);
    let node = node_of(pod);
    let remembered = notices.lock().await.get(&node).cloned();
    let mut verdict = classify(
        &failure,
        record.as_ref(),
        remembered.as_ref().map(|n| (node.as_str(), n)),
        Timestamp::now(),
    );
    // A pod's failure can come in before its node's notice does on the other watch:
    // such a kill is worth one read of the node.
    if matches!(verdict, Verdict::Unknown(NO_NODE_NOTICE))
        && !node.is_empty()
        && let Some(fresh) = read_node_notice(client, &node).await?
    {
        verdict = classify(
            &failure,
            record.as_ref(),
            Some((&node, &fresh)),
            Timestamp::now(),
        );
        notices.lock().await.observe(&node, Some(fresh));
    }
    let name = pod_key(pod);
    let evidence = match verdict {
        Verdict::SpotCaused(evidence) => Evidence {
            pod: Some(name.clone()),
            ..evidence
        },
        Verdict::NotSpot(why) => {
            metrics.verdict("not_spot");
            tracing::info!(pod = %name, why, "not a spot interruption; nothing written");
            return Ok(Written::Nothing);
        }
        Verdict::Unknown(why) => {
            metrics.verdict("unknown");
            tracing::info!(pod = %name, why, "no verdict");
            return Ok(Written::Nothing);
        }
    };
    // Marked by an earlier run (or another replica) that may have failed before it
    // reached the owners: the pod is left as it is, its owners still get the verdict.
    if !pod.annotations().contains_key(CAUSE_ANNOTATION) {
        mark(
            &Api::<Pod>::namespaced(client.clone(), &namespace),
            writer,
            &pod.name_any(),
            pod.resource_version(),
            &evidence,
        )
        .await?;
        metrics.spot_caused(&namespace);
        if let Some(died) = failure.exits.iter().filter_map(|e| e.finished_at).max() {
            metrics.classified_after(jiff::Timestamp::now().duration_since(died).as_secs_f64());
        }
        tracing::info!(kind = "Pod", object = %name, signals = %evidence.signals.join(","), "spot-caused failure marked retryable");
        record_event(client, &pod.object_ref(&()), &evidence).await;
    }
    mark_owners_and_list(client, writer, pod, &evidence).await?;
    Ok(Written::Verdict)
}
