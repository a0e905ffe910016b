//! The classifier's Prometheus metrics: verdicts by outcome, how long after a pod died
//! its verdict was written, and whether this replica leads. No pod names or ids as labels.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NamespaceLabels {
    namespace: String,
}

#[derive(Debug)]
pub struct ClassifierMetrics {
    registry: Registry,
    verdicts: Family<VerdictLabels, Counter>,
    spot_caused: Family<NamespaceLabels, Counter>,
    classify_seconds: Histogram,
    leader: Gauge,
    pending: Gauge,
    dropped: Family<ReasonLabels, Counter>,
}

/// The verdicts, each exported from the start (at 0) so rates see the first one.
const VERDICTS: [&str; 3] = ["spot_caused", "not_spot", "unknown"];

/// Why work was given up ([`ClassifierMetrics::dropped`]), each exported from the start.
pub const DROPPED_REASONS: [&str; 3] = ["gone", "refused", "memory_full"];

impl Default for ClassifierMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("reclaim_classifier");
        let verdicts = Family::<VerdictLabels, Counter>::default();
        registry.register(
            "verdicts",
            "Failed pods classified, by verdict (spot_caused, not_spot, unknown)",
            verdicts.clone(),
        );
        let spot_caused = Family::<NamespaceLabels, Counter>::default();
        registry.register(
            "spot_caused",
            "Failed pods marked spot-caused, by namespace",
            spot_caused.clone(),
        );
        let classify_seconds =
            Histogram::new([0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0]);
        registry.register(
            "classify_seconds",
            "Time from a container's death to its spot-caused verdict being written",
            classify_seconds.clone(),
        );
        let pending = Gauge::default();
        registry.register(
            "pending_verdicts",
            "Verdicts whose write failed, waiting to be retried",
            pending.clone(),
        );
        let dropped = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "dropped",
            "Verdict work given up: the object was gone (gone), the server refused the write for good (refused: 400, 403, 422), or the bounded memory was full (memory_full)",
            dropped.clone(),
        );
        for reason in DROPPED_REASONS {
            dropped
                .get_or_create(&ReasonLabels {
                    reason: reason.to_owned(),
                })
                .inc_by(0);
        }
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the Lease and writes verdicts, else 0",
            leader.clone(),
        );
        for verdict in VERDICTS {
            verdicts
                .get_or_create(&VerdictLabels {
                    verdict: verdict.to_owned(),
                })
                .inc_by(0);
        }
        ClassifierMetrics {
            registry,
            verdicts,
            spot_caused,
            classify_seconds,
            leader,
            pending,
            dropped,
        }
    }
}

impl ClassifierMetrics {
    /// `verdict`: `spot_caused`, `not_spot` or `unknown`.
    /// A failed pod of `namespace` marked spot-caused.
    pub fn spot_caused(&self, namespace: &str) {
        self.verdict("spot_caused");
        self.spot_caused
            .get_or_create(&NamespaceLabels {
                namespace: namespace.to_owned(),
            })
            .inc();
    }

    pub fn verdict(&self, verdict: &str) {
        self.verdicts
            .get_or_create(&VerdictLabels {
                verdict: verdict.to_owned(),
            })
            .inc();
    }

    pub fn leading(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    pub fn pending(&self, verdicts: usize) {
        self.pending.set(verdicts as i64);
    }

    /// Work given up, for one of [`DROPPED_REASONS`].
    pub fn dropped(&self, reason: &str) {
        self.dropped
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn classified_after(&self, seconds: f64) {
        self.classify_seconds.observe(seconds.max(0.0));
    }
}

impl reclaim_service::endpoints::Exposition for ClassifierMetrics {
    fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String never fails");
        out
    }
}
