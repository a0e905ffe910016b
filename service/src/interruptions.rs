//! Kubernetes access to the `Interruption` records (`interruptions.reclaim.dev`), shared
//! by the agent (which writes them) and the classifier (which completes and deletes
//! them). The record's shape is `reclaim_model::interruption`.
//!
//! Both binaries must keep doing their real job on a cluster where the CRD is not
//! installed: [`crd_missing`] tells that answer apart, and [`report_crd_missing`] says so
//! once per process.

use std::sync::Once;

use kube::api::{Api, ApiResource, DynamicObject};
use kube::{Client, core::GroupVersionKind};
use reclaim_model::interruption::{GROUP, KIND, PLURAL, VERSION};

/// The records, cluster-scoped.
pub fn api(client: &Client) -> Api<DynamicObject> {
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, KIND), PLURAL);
    Api::all_with(client.clone(), &resource)
}

/// The server does not know the resource at all (the CRD is not installed), as opposed
/// to one record being missing (`interruptions.reclaim.dev "name" not found`). An unknown
/// API group answers a plain-text `404 page not found`; a known group without the
/// resource, a Status saying it `could not find the requested resource`.
pub fn crd_missing(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status)
        if status.code == 404
            && (status.message.contains("404 page not found")
                || status.message.contains("could not find the requested resource")))
}

static CRD_MISSING: Once = Once::new();

/// Logs, once per process, that records are not kept and what to do about it.
pub fn report_crd_missing(binary: &str) {
    CRD_MISSING.call_once(|| {
        tracing::warn!(
            "the Interruption CRD (interruptions.reclaim.dev) is not installed, so {binary} keeps no Interruption records; everything else works. Apply manifests/base/crd/interruptions.yaml to keep them"
        )
    });
}
