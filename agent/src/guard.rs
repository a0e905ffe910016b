//! The loop that guards one node: take in what each metadata path answers, decide, act
//! on the Node, drain when the notice calls for it.
//!
//! All state that matters lives on the Node (its annotations), so an agent restarted
//! mid-drain reads the notice back and resumes the drain without writing a second taint
//! or a second Event. The only memory kept here is how long a notice has been absent
//! ([`Sightings`]): a restarted agent merely waits that long again before an undo.
//! Metadata errors never end the loop: the pollers ([`polling`]) count and log them and
//! poll again at the poll interval. A drill ([`crate::drill`]) comes in through the
//! node's annotation, watched by [`OwnNode`], and is decided like any notice. The Node
//! is read again only when that watch reports a new version of it, so a notice that
//! stays announced costs the API server nothing per poll.

use std::sync::Arc;
use std::time::Instant;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::{Client, Resource, ResourceExt};
use reclaim_model::interruption::{AgentStatus, InterruptionSpec, Phase};
use reclaim_model::keys::DRILL_ANNOTATION;
use reclaim_model::{Notice, Placement, Provider};
use tokio::sync::watch;

use crate::config::Config;
use crate::connect::connect;
use crate::decision::{
    Decision, NodeRecord, Observation, Policy, decide, drain_deadline, drains, hard_deadline,
};
use crate::drain::DrainJob;
use crate::drain::plan::OwnPod;
use crate::drain::task::DrainTask;
use crate::drill::Drills;
use crate::imds::{MetadataClient, MetadataPath};
use crate::metrics::Metrics;
use crate::node::{apply_notice_patch, record_of, undo_patch, update_node_from};
use crate::observation::Sightings;
use crate::own_node::OwnNode;
use crate::pods::clear_interruption_records;
use crate::polling;
use crate::record::Record;
use reclaim_service::endpoints::Health;
use reclaim_service::events::{self, Severity};

pub struct Guard {
    client: Client,
    config: Config,
    policy: Policy,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    /// The drain this guard started (running or finished).
    drain: Option<DrainTask>,
    /// The Interruption record of the notice acted on, by event id.
    record: Option<(String, Record)>,
    /// The drill the node's annotation announces.
    drills: Drills,
    drills_enabled: bool,
    /// The node carried no notice when last read. With nothing announced there is then
    /// nothing to decide, so the Node is not read: idle agents cost the API server nothing.
    node_idle: bool,
    /// The Node as last read; used again while the watch reports the same version.
    node: Option<Node>,
}

/// Runs until `shutdown` turns true.
pub async fn run(
    config: Config,
    client: Client,
    mut own_node: OwnNode,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    mut shutdown: watch::Receiver<bool>,
) {
    let drills_enabled = !config.disable_drills;
    let mut guard = Guard {
        policy: config.policy(),
        client,
        config,
        metrics,
        health,
        drain: None,
        record: None,
        drills: Drills::default(),
        drills_enabled,
        node_idle: false,
        node: None,
    };
    if let Err(why) = confirm_token(&guard.client, &guard.config.node_name).await {
        refuse(&guard.health, why, &mut shutdown).await;
        return;
    }
    let connected = connect(&guard.config, &guard.client, &guard.health, &mut shutdown).await;
    let Some(source) = connected else {
        return;
    };
    if let Err(why) = confirm_instance(&guard.client, &guard.config.node_name, &source).await {
        refuse(&guard.health, why, &mut shutdown).await;
        return;
    }
    let interval = guard.config.poll_interval;
    let (_pollers, mut polls) = polling::start(source.clone(), interval, guard.metrics.clone());
    let mut sightings = Sightings::new(&source.paths());
    let mut decided_at: Option<Instant> = None;
    loop {
        let mut changed = false;
        tokio::select! {
            _ = shutdown.changed() => break,
            () = own_node.drill_changed() => changed = true,
            polled = polls.recv() => match polled {
                Some(polled) => changed |= sightings.record(polled.path, polled.answer, polled.at),
                None => break,
            },
        }
        guard.health.loop_turned();
        while let Ok(more) = polls.try_recv() {
            changed |= sightings.record(more.path, more.answer, more.at);
        }
        guard.report_paths(&sightings);
        // Decide at once when what is said changed, else once per poll interval (so
        // absences and expiries are judged) rather than once per path.
        if changed || decided_at.is_none_or(|t| t.elapsed() >= interval) {
            decided_at = Some(Instant::now());
            guard.react(&sightings, &source, &own_node).await;
        }
    }
    if let Some(drain) = guard.drain.take()
        && !drain.handle.is_finished()
    {
        tracing::info!(
            event = drain.event,
            "stopping with a drain in progress; a restarted agent resumes it"
        );
    }
    tracing::info!("stopped");
}

/// Alive but never ready, and acting on nothing, until shutdown: a restart would not make
/// the token or the instance name another node.
async fn refuse(health: &Health, why: String, shutdown: &mut watch::Receiver<bool>) {
    tracing::error!("{why}");
    health.set_not_ready(why);
    loop {
        health.loop_turned();
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
        }
    }
}

/// The node the agent's own token names, compared with `--node-name` (see
/// [`crate::identity`]). A review the server cannot answer does not stop the agent: the
/// check is a guard against misconfiguration and stolen tokens, and the server's own
/// policies are what confine a token.
async fn confirm_token(client: &Client, node_name: &str) -> Result<(), String> {
    match crate::identity::token_nodes(client).await {
        Ok(named) => crate::identity::check(node_name, &named),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read which node this agent's token names (SelfSubjectReview); going on");
            Ok(())
        }
    }
}

/// The instance the metadata service describes, compared with the one the Node's
/// providerID names (see [`crate::identity`]); either unreadable, the agent goes on.
async fn confirm_instance(
    client: &Client,
    node_name: &str,
    source: &MetadataClient,
) -> Result<(), String> {
    let provider_id = match Api::<Node>::all(client.clone()).get(node_name).await {
        Ok(node) => node.spec.and_then(|s| s.provider_id).unwrap_or_default(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the Node's providerID to compare with the metadata service; going on");
            return Ok(());
        }
    };
    match source.instance().await {
        Ok(instance) => crate::identity::check_instance(
            node_name,
            source.provider(),
            &provider_id,
            instance.as_deref(),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read which instance the metadata service describes; going on");
            Ok(())
        }
    }
}

impl Guard {
    /// Tells `/readyz` and the metrics which paths fail.
    fn report_paths(&self, sightings: &Sightings) {
        let failing = sightings.failing();
        if failing.is_empty() {
            self.health.set_ready();
        } else {
            let paths: Vec<String> = failing
                .iter()
                .map(|f| match f.error {
                    Some(error) => {
                        format!("{} ({error}, {} polls in a row)", f.path.label(), f.count)
                    }
                    None => format!("{} (no answer yet)", f.path.label()),
                })
                .collect();
            self.health
                .set_not_ready(format!("metadata paths failing: {}", paths.join("; ")));
        }
        if let Some(at) = sightings.all_answered_at() {
            self.metrics.all_paths_answered(at);
        }
    }

    fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    /// The guarded Node: as last read while the watch reports that version, else read.
    async fn current_node(&mut self, own_node: &OwnNode) -> kube::Result<Node> {
        let watched = own_node.resource_version();
        if let Some(node) = &self.node
            && watched.is_some()
            && node.resource_version() == watched
        {
            return Ok(node.clone());
        }
        let node = self.nodes().get(&self.config.node_name).await?;
        self.metrics
            .node_placement(&Placement::from_labels(node.labels()));
        self.node = Some(node.clone());
        Ok(node)
    }

    async fn react(
        &mut self,
        sightings: &Sightings,
        source: &Arc<MetadataClient>,
        own_node: &OwnNode,
    ) {
        let announced = sightings.announced();
        let drill_annotated = self.drills_enabled && own_node.drill_annotated();
        if announced.is_empty() && self.node_idle && !drill_annotated {
            return;
        }
        let node = match self.current_node(own_node).await {
            Ok(node) => node,
            Err(e) => {
                tracing::warn!(error = %e, node = %self.config.node_name, "cannot read the guarded node; will retry on the next poll");
                return;
            }
        };
        let record = record_of(&node);
        self.node_idle = record.notice.is_none();
        let provider = source.provider();
        let annotation = node
            .annotations()
            .get(DRILL_ANNOTATION)
            .filter(|_| self.drills_enabled);
        let drill = self.drills.read(
            annotation.map(String::as_str),
            record.notice.as_ref(),
            provider,
            Timestamp::now(),
        );
        if let Some(why) = drill.refused {
            tracing::warn!(why, "the drill annotation is not a drill; nothing done");
            self.publish(&node, Severity::Warning, "DrillRefused", why)
                .await;
        }
        let seen = Observation {
            announced,
            drill: drill.announced,
            ended: sightings.ended(),
            current_absence: record.notice.as_ref().and_then(|n| {
                sightings.absence(MetadataPath::announcing(n.provider, n.kind)?, &n.event_id)
            }),
        };
        match decide(&seen, &record, provider, Timestamp::now(), &self.policy) {
            Decision::Idle => {}
            Decision::Act(notice) => {
                self.node_idle = false;
                self.act(&node, &record, notice, source).await
            }
            Decision::Undo { why, retire } => self.undo(&node, why, retire).await,
        }
    }

    async fn act(
        &mut self,
        node: &Node,
        record: &NodeRecord,
        notice: Notice,
        source: &Arc<MetadataClient>,
    ) {
        let first_time = record.notice.as_ref().map(|n| &n.event_id) != Some(&notice.event_id);
        let drains = drains(notice.kind, &self.policy);
        if self.config.dry_run {
            if first_time {
                tracing::info!(kind = notice.kind.as_str(), event = %notice.event_id, drains, "dry run: would taint and cordon the node{}", if drains { " and drain it" } else { "" });
            }
            return;
        }
        match update_node_from(
            &self.nodes(),
            &self.config.node_name,
            Some(node.clone()),
            |n| apply_notice_patch(n, &notice),
        )
        .await
        {
            Ok(applied) if applied.changed => {
                self.metrics.node_action("apply", "changed");
                if first_time {
                    let latency = Timestamp::now()
                        .duration_since(notice.notice_time)
                        .as_secs_f64();
                    let spec = self.spec_of(node, &notice);
                    self.metrics
                        .notice(notice.provider, notice.kind, &spec.placement);
                    if let Some(age) = spec.node_age_seconds {
                        self.metrics.node_age_at_notice(age);
                    }
                    self.metrics.notice_to_taint(latency);
                    tracing::info!(provider = notice.provider.as_str(), kind = notice.kind.as_str(), event = %notice.event_id, deadline = ?notice.deadline.map(|d| d.to_string()), "interruption notice: node tainted and cordoned");
                    let deadline = notice
                        .deadline
                        .map(|d| format!(", deadline {d}"))
                        .unwrap_or_default();
                    let note = format!(
                        "{} {} notice {}{deadline}; node tainted and cordoned{}",
                        notice.provider.as_str(),
                        notice.kind.as_str(),
                        notice.event_id,
                        if drains { ", draining" } else { "" }
                    );
                    self.publish(node, Severity::Warning, "InterruptionNotice", note)
                        .await;
                }
            }
            Ok(_) => {}
            Err(e) => {
                self.metrics.node_action("apply", "failed");
                tracing::error!(error = %e, "could not taint and cordon the node; draining anyway if the notice calls for it");
            }
        }
        self.keep_record(node, &notice, drains);
        if drains && self.drain.as_ref().map(|d| &d.event) != Some(&notice.event_id) {
            self.start_drain(notice, source.clone());
        }
    }

    /// Starts the notice's Interruption record unless it is being written already; the
    /// record of a notice it replaces says so.
    fn keep_record(&mut self, node: &Node, notice: &Notice, drains: bool) {
        if self.record.as_ref().map(|(event, _)| event) == Some(&notice.event_id) {
            return;
        }
        if let Some((_, replaced)) = self.record.take() {
            replaced.cancel(&format!(
                "replaced by the {} {} notice {}",
                notice.provider.as_str(),
                notice.kind.as_str(),
                notice.event_id
            ));
        }
        let status = AgentStatus {
            phase: if drains {
                Phase::Draining
            } else {
                Phase::Noticed
            },
            reason: if drains {
                "tainted and cordoned; draining".into()
            } else {
                "tainted and cordoned; this kind of notice does not drain".into()
            },
            drain: None,
        };
        let record = Record::start(self.client.clone(), self.spec_of(node, notice), status);
        self.record = Some((notice.event_id.clone(), record));
    }

    async fn undo(&mut self, node: &Node, why: &'static str, retire: Option<String>) {
        self.drain = None;
        if self.config.dry_run {
            tracing::info!(
                why,
                "dry run: would lift the taint and the agent's cordon, and clear the pods' interruption records"
            );
            return;
        }
        // The pods first: while their records stay, the node's notice stays too, so a
        // failure here (or a restart) brings the whole undo back on the next poll.
        match clear_interruption_records(&self.client, &self.config.node_name).await {
            Ok(0) => {}
            Ok(cleared) => tracing::info!(
                cleared,
                why,
                "cleared the interruption record of the pods that stay"
            ),
            Err(e) => {
                self.metrics.node_action("undo", "failed");
                tracing::warn!(error = %e, "could not clear the pods' interruption records; the undo is retried on the next poll");
                return;
            }
        }
        match update_node_from(
            &self.nodes(),
            &self.config.node_name,
            Some(node.clone()),
            |n| undo_patch(n, retire.as_deref()),
        )
        .await
        {
            Ok(applied) if applied.changed => {
                self.metrics.node_action("undo", "changed");
                tracing::info!(why, "lifted the interruption taint and the agent's cordon");
                self.close_record(node, why);
                self.publish(
                    node,
                    Severity::Normal,
                    "InterruptionCleared",
                    format!("taint lifted: {why}"),
                )
                .await;
            }
            Ok(_) => {}
            Err(e) => {
                self.metrics.node_action("undo", "failed");
                tracing::error!(error = %e, "could not lift the interruption taint; will retry on the next poll");
            }
        }
    }

    /// The record's spec for `notice` on `node`: where the node is and how old it is.
    fn spec_of(&self, node: &Node, notice: &Notice) -> InterruptionSpec {
        let created = node.metadata.creation_timestamp.as_ref().map(|t| t.0);
        InterruptionSpec::new(
            notice.for_pod(&self.config.node_name),
            node.labels(),
            created,
        )
    }

    /// Marks the undone notice's record canceled (a restarted agent finds the notice on
    /// the node and reopens its record to do so).
    fn close_record(&mut self, node: &Node, why: &str) {
        let record = match self.record.take() {
            Some((_, record)) => record,
            None => match record_of(node).notice {
                Some(notice) => Record::start(
                    self.client.clone(),
                    self.spec_of(node, &notice),
                    AgentStatus {
                        phase: Phase::Canceled,
                        reason: why.to_owned(),
                        drain: None,
                    },
                ),
                None => return,
            },
        };
        record.cancel(why);
    }

    async fn publish(&self, node: &Node, severity: Severity, reason: &str, note: String) {
        if let Err(e) = events::record(
            &self.client,
            &node.object_ref(&()),
            "reclaim-agent",
            severity,
            reason,
            &note,
        )
        .await
        {
            tracing::warn!(error = %e, hint = %reclaim_service::client::hint(&e, "events create in default"), "could not record a Kubernetes Event on the node");
        }
    }

    fn start_drain(&mut self, notice: Notice, source: Arc<MetadataClient>) {
        let own_pod = match (&self.config.pod_namespace, &self.config.pod_name) {
            (Some(namespace), Some(name)) => Some(OwnPod {
                namespace: namespace.clone(),
                name: name.clone(),
            }),
            _ => None,
        };
        let job = DrainJob {
            node: self.config.node_name.clone(),
            record: notice.for_pod(&self.config.node_name),
            deadline: drain_deadline(&notice, &self.policy),
            hard_deadline: hard_deadline(&notice, &self.policy),
            own_pod,
            retry_interval: self.config.eviction_retry_interval,
        };
        // A drill's event is not the platform's: there is nothing to acknowledge.
        let acknowledge = match source.as_ref() {
            MetadataClient::Azure(_)
                if self.config.azure_acknowledge && notice.provider == Provider::Azure =>
            {
                Some(source)
            }
            _ => None,
        };
        self.drain = Some(DrainTask::start(
            notice.event_id,
            job,
            self.client.clone(),
            self.metrics.clone(),
            self.health.clone(),
            self.record.as_ref().map(|(_, record)| record.clone()),
            acknowledge,
        ));
    }
}
