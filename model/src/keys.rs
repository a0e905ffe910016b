//! Taint and annotation keys: the names users, alert rules and Airflow depend on.

/// Taint the agent puts on a node with a notice: `reclaim.dev/interruption=<kind>:NoSchedule`.
pub const INTERRUPTION_TAINT: &str = "reclaim.dev/interruption";

/// Effect of the interruption taint: new pods stay away, running ones are drained by the agent.
pub const INTERRUPTION_TAINT_EFFECT: &str = "NoSchedule";

/// Node annotation holding the JSON [`crate::Notice`] the agent acted on.
pub const NODE_NOTICE_ANNOTATION: &str = "reclaim.dev/notice";

/// Pod annotation holding the JSON [`crate::PodInterruption`], written before the
/// agent evicts or deletes the pod, so the reason outlives the node.
pub const POD_INTERRUPTION_ANNOTATION: &str = "reclaim.dev/interruption";

/// Pod label the agent sets with the interruption annotation (value: the notice kind), so
/// the classifier can watch just the interrupted pods in full, final status included.
pub const INTERRUPTED_LABEL: &str = "reclaim.dev/interrupted";

/// Classifier verdict: why the pod failed (`spot-interruption`).
pub const CAUSE_ANNOTATION: &str = "reclaim.dev/cause";

/// Classifier verdict: `"true"` when retrying the job is the right response.
pub const RETRYABLE_ANNOTATION: &str = "reclaim.dev/retryable";

/// Classifier verdict: JSON naming the node, the notice and the signals that matched.
pub const EVIDENCE_ANNOTATION: &str = "reclaim.dev/evidence";

/// Node annotation `"true"` when Reclaim cordoned the node, so it uncordons only what it cordoned.
pub const CORDONED_ANNOTATION: &str = "reclaim.dev/cordoned";

/// Node annotation naming the event the agent retired (an expired rebalance
/// recommendation that the provider still announces), so it is not acted on again.
pub const RETIRED_NOTICE_ANNOTATION: &str = "reclaim.dev/retired-notice";

/// Pod annotation moving a pod to another drain group: `first`, `normal` or `last`
/// (an external shuffle service pod that executors need, say, to `last`).
pub const DRAIN_GROUP_ANNOTATION: &str = "reclaim.dev/drain-group";

/// Node label that tells cloud load balancers to stop sending the node traffic; the
/// agent sets it with the taint.
pub const EXCLUDE_FROM_LOAD_BALANCERS_LABEL: &str =
    "node.kubernetes.io/exclude-from-external-load-balancers";

/// Node annotation `"true"` when Reclaim set [`EXCLUDE_FROM_LOAD_BALANCERS_LABEL`], so it
/// removes only a label it set.
pub const EXCLUDED_ANNOTATION: &str = "reclaim.dev/excluded-from-load-balancers";

/// Node annotation that starts a drill: `spot-interruption`, or `spot-interruption,lead=45s`
/// for a deadline other than the cloud's usual notice. Removing it cancels the drill.
pub const DRILL_ANNOTATION: &str = "reclaim.dev/drill";
