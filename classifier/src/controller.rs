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
use reclaim_model::keys::{CAUSE_ANNOTATION, INTERRUPTED_LABEL, POD_INTERRUPTION_ANNOTATION};
use reclaim_model::verdict::{OwnFailure, SPOT_INTERRUPTION_CAUSE};
use reclaim_model::{Evidence, Notice, PodInterruption};
use reclaim_service::endpoints::Health;
use tokio::sync::{Mutex, watch as signal};

use crate::judged::Judged;
use crate::last_seen::LastSeen;
use crate::latest::{Finding, recorded_failure, replaces};
use crate::metrics::ClassifierMetrics;
use crate::notices::NodeNotices;
use crate::progress::WatchProgress;
use crate::record::{add_verdicts, collect_garbage, collection_interval};
use crate::retries::{Pending, Retries, Work, permanent};
use crate::verdict::{Failure, NO_NODE_NOTICE, Verdict, classify, failure_of};
use crate::writer::{Marked, log_marked, mark, mark_owners, record_event};

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
            if !retries.schedule(uid, work, attempts, Instant::now()) {
                settings.metrics.dropped("memory_full");
                tracing::warn!(
                    kept = retries.len(),
                    "too many verdicts waiting to be retried; this one is dropped"
                );
            }
            settings.metrics.pending(retries.len());
        }
    };
    // A write that failed: retried with backoff, unless the same request would only be
    // refused again (or has nothing left to write on).
    let write_failed = |uid: String, work: Pending, attempts: u32, error: kube::Error| {
        let retry_later = &retry_later;
        async move {
            let pod = pod_key(&work.pod);
            let gone = matches!(&error, kube::Error::Api(status) if status.code == 404);
            if permanent(&error) {
                settings.metrics.dropped("refused");
                tracing::warn!(%pod, %error, attempts, "the server refuses the verdict's write for good; given up");
            } else if gone && attempts > 1 {
                settings.metrics.dropped("gone");
                tracing::info!(%pod, attempts, "nothing left to write the verdict on (gone)");
            } else {
                tracing::warn!(%pod, %error, attempts, "could not write the verdict; retrying with backoff until it is written");
                retry_later(uid, work, attempts).await;
            }
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
                    let observed = Timestamp::now();
                    match handle(&client, writer, &settings.metrics, &pod, notices, observed).await
                    {
                        Ok(Written::Verdict) => {}
                        Ok(Written::Nothing) => judged.lock().await.insert(uid),
                        Err(e) => {
                            let work = Pending {
                                pod: pod.clone(),
                                observed,
                                work: Work::Failed,
                            };
                            write_failed(uid, work, 1, e).await;
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
        let (client, judged, write_failed) = (&client, &judged, &write_failed);
        let on_deleted = move |pod: Pod| async move {
            // Judged when it failed: nothing more to say.
            if judged.lock().await.remove(&pod.uid().unwrap_or_default()) {
                return;
            }
            let observed = Timestamp::now();
            if let Err(e) = handle_deleted(client, writer, &settings.metrics, &pod, observed).await
            {
                let uid = pod.uid().unwrap_or_default();
                let work = Pending {
                    pod,
                    observed,
                    work: Work::Deleted,
                };
                write_failed(uid, work, 1, e).await;
            }
        };
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::Delete(pod)) => {
                    went(INTERRUPTED_PODS, true, false);
                    last_seen.deleted(&pod);
                    on_deleted(pod).await;
                }
                Ok(Event::Apply(pod)) | Ok(Event::InitApply(pod)) => {
                    let key = pod_key(&pod);
                    if !last_seen.applied(pod) {
                        settings.metrics.dropped("memory_full");
                        tracing::warn!(pod = %key, "too many labelled pods to remember; this one's deletion may go unjudged if it happens while the watch is down");
                    }
                }
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
            for (uid, pending, attempts) in due {
                let written = match pending.work {
                    Work::Failed => {
                        retry_failed(&client, writer, &settings.metrics, &pending, notices).await
                    }
                    Work::Deleted => {
                        handle_deleted(
                            &client,
                            writer,
                            &settings.metrics,
                            &pending.pod,
                            pending.observed,
                        )
                        .await
                    }
                };
                match written {
                    Ok(Written::Verdict) => {
                        tracing::info!(pod = %uid, attempts, "verdict written after retrying")
                    }
                    Ok(Written::Nothing) => {
                        tracing::info!(pod = %uid, attempts, "judged again after retrying: no spot-caused verdict to write")
                    }
                    Err(e) => write_failed(uid, pending, attempts + 1, e).await,
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
    pending: &Pending,
    notices: &Mutex<NodeNotices>,
) -> kube::Result<Written> {
    let seen = &pending.pod;
    let pods = Api::<Pod>::namespaced(client.clone(), &seen.namespace().unwrap_or_default());
    match pods.get_opt(&seen.name_any()).await? {
        Some(fresh) if fresh.uid() == seen.uid() => {
            handle(client, writer, metrics, &fresh, notices, pending.observed).await
        }
        _ => {
            let node = node_of(seen);
            let remembered = notices.lock().await.get(&node).cloned();
            let node_notice = remembered.as_ref().map(|n| (node.as_str(), n));
            let record = interruption_of(seen);
            let gone = Subject::Gone { counted: false };
            let judged = (seen, pending.observed);
            settle_gone(
                client,
                writer,
                metrics,
                judged,
                record.as_ref(),
                node_notice,
                gone,
            )
            .await
        }
    }
}

/// Judges a pod that is gone from its last state, and writes what that says on its owners.
async fn settle_gone(
    client: &Client,
    writer: &str,
    metrics: &ClassifierMetrics,
    (pod, observed): (&Pod, Timestamp),
    record: Option<&PodInterruption>,
    node_notice: Option<(&str, &Notice)>,
    subject: Subject,
) -> kube::Result<Written> {
    let failure = failure_of(pod, true);
    let verdict = classify(&failure, record, node_notice, observed);
    let judged = Judgment {
        pod,
        failure: &failure,
        observed,
    };
    settle(client, writer, metrics, judged, verdict, subject).await
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
    reclaim_model::namespaced_name(&pod.namespace().unwrap_or_default(), &pod.name_any())
}

fn notice_of(node: &PartialObjectMeta<Node>) -> Option<Notice> {
    Notice::of_node(node.annotations()).and_then(Result::ok)
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
/// unless its last status shows a failure of its own (OOMKilled during its grace period),
/// which replaces an earlier spot verdict on them.
async fn handle_deleted(
    client: &Client,
    writer: &str,
    metrics: &ClassifierMetrics,
    pod: &Pod,
    observed: Timestamp,
) -> kube::Result<Written> {
    let Some(record) = interruption_of(pod) else {
        return Ok(Written::Nothing);
    };
    if still_there(client, pod).await? {
        tracing::info!(pod = %pod_key(pod), "the agent's label left a pod that stays (an undo); not a deletion");
        return Ok(Written::Nothing);
    }
    // A pod that reached Failed was counted by the failed-pod watch already.
    let counted = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed");
    let gone = Subject::Gone { counted };
    settle_gone(
        client,
        writer,
        metrics,
        (pod, observed),
        Some(&record),
        None,
        gone,
    )
    .await
}

/// What [`handle`] wrote about a failed pod.
enum Written {
    /// A spot-caused verdict.
    Verdict,
    /// No spot-caused verdict (unknown, or the pod's own failure).
    Nothing,
}

/// Classifies one failed pod and writes what it says: a spot verdict on it and its owners,
/// or its own failure where that replaces an earlier spot verdict.
async fn handle(
    client: &Client,
    writer: &str,
    metrics: &ClassifierMetrics,
    pod: &Pod,
    notices: &Mutex<NodeNotices>,
    observed: Timestamp,
) -> kube::Result<Written> {
    let record = interruption_of(pod);
    let failure = failure_of(pod, false);
    let node = node_of(pod);
    let remembered = notices.lock().await.get(&node).cloned();
    let mut verdict = classify(
        &failure,
        record.as_ref(),
        remembered.as_ref().map(|n| (node.as_str(), n)),
        observed,
    );
    // A pod's failure can come in before its node's notice does on the other watch:
    // such a kill is worth one read of the node.
    if matches!(verdict, Verdict::Unknown(NO_NODE_NOTICE))
        && !node.is_empty()
        && let Some(fresh) = read_node_notice(client, &node).await?
    {
        verdict = classify(&failure, record.as_ref(), Some((&node, &fresh)), observed);
        notices.lock().await.observe(&node, Some(fresh));
    }
    let judged = Judgment {
        pod,
        failure: &failure,
        observed,
    };
    settle(client, writer, metrics, judged, verdict, Subject::Present).await
}

/// A dead pod as judged.
struct Judgment<'a> {
    pod: &'a Pod,
    failure: &'a Failure,
    /// When the classifier first saw it dead.
    observed: Timestamp,
}

/// Where a verdict goes.
enum Subject {
    /// The pod exists: it carries the verdict too.
    Present,
    /// The pod is gone: only its owners do. `counted`: its verdict is in the metrics already.
    Gone { counted: bool },
}

/// Writes what `verdict` says about a dead pod: a spot verdict on the pod (if present)
/// and its owners, then in the notice's record; its own failure where that replaces an
/// earlier spot verdict (a driver that an executor's reclaim marked, then OOM-killed).
async fn settle(
    client: &Client,
    writer: &str,
    metrics: &ClassifierMetrics,
    judged: Judgment<'_>,
    verdict: Verdict,
    subject: Subject,
) -> kube::Result<Written> {
    let Judgment {
        pod,
        failure,
        observed,
    } = judged;
    let name = pod_key(pod);
    let namespace = pod.namespace().unwrap_or_default();
    let uncounted = !matches!(subject, Subject::Gone { counted: true });
    let finding = match verdict {
        Verdict::SpotCaused(evidence) => Finding::Spot(Evidence {
            pod: Some(name.clone()),
            ..evidence
        }),
        Verdict::NotSpot(why) => {
            if uncounted {
                metrics.verdict("not_spot");
            }
            tracing::info!(pod = %name, why, "not a spot interruption");
            Finding::Own(OwnFailure {
                pod: name.clone(),
                failed_at: failure.killed_at(observed),
                why,
            })
        }
        Verdict::Unknown(why) => {
            if matches!(subject, Subject::Present) {
                metrics.verdict("unknown");
                tracing::info!(pod = %name, why, "no verdict");
            }
            return Ok(Written::Nothing);
        }
    };
    let spot = matches!(finding, Finding::Spot(_));
    let mut marked = Vec::new();
    match subject {
        Subject::Present => {
            let recorded = recorded_failure(pod.annotations());
            let pods = Api::<Pod>::namespaced(client.clone(), &namespace);
            let write = replaces(recorded, &finding);
            if write {
                mark(
                    &pods,
                    writer,
                    &pod.name_any(),
                    pod.resource_version(),
                    &finding,
                )
                .await?;
                log_marked("Pod", &name, &finding, recorded);
                record_event(client, &pod.object_ref(&()), &finding).await;
            }
            if spot && write {
                metrics.spot_caused(&namespace);
                if let Some(died) = failure.exits.iter().filter_map(|e| e.finished_at).max() {
                    metrics.classified_after(Timestamp::now().duration_since(died).as_secs_f64());
                }
            }
            if spot
                && (write
                    || pod.annotations().get(CAUSE_ANNOTATION).map(String::as_str)
                        == Some(SPOT_INTERRUPTION_CAUSE))
            {
                marked.push(Marked {
                    kind: "Pod".into(),
                    namespace: namespace.clone(),
                    name: pod.name_any(),
                });
            }
        }
        Subject::Gone { .. } if spot && uncounted => metrics.spot_caused(&namespace),
        Subject::Gone { .. } => {}
    }
    marked.extend(mark_owners(client, writer, &namespace, pod.owner_references(), &finding).await?);
    match finding {
        Finding::Spot(evidence) => {
            add_verdicts(client, writer, &evidence, &marked).await?;
            Ok(Written::Verdict)
        }
        Finding::Own(_) => Ok(Written::Nothing),
    }
}
