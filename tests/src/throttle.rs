//! API Priority and Fairness throttling one ServiceAccount's evictions for real, as an
//! overloaded priority level does in a busy cluster: the server itself answers 429 with
//! `Retry-After`, nothing in the product is special-cased.
//!
//! A FlowSchema sends the account's `create pods/eviction` to a priority level of its own
//! with no concurrency of its own (`nominalConcurrencyShares: 0`, nothing borrowed,
//! `Reject`). Such a level still lets one request execute when none is executing, so a
//! slow client of the same account holds that one seat: it sends an eviction's headers
//! and never its body (`openssl s_client`, over the real TLS), and the server's handler
//! waits for the body with the seat taken. Every other eviction of the account is then
//! rejected with a real 429 until [`Throttle::end`].

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use kube::discovery::ApiResource;
use serde_json::json;

use crate::ControlPlane;
use reclaim_agent::eviction::{Answer, PodRef, evict};

/// The throttling of one ServiceAccount's evictions, in force until [`Throttle::end`].
pub struct Throttle {
    admin: Client,
    name: String,
    slow_client: Child,
}

fn flow_control(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
        "flowcontrol.apiserver.k8s.io",
        "v1",
        kind,
    ))
}

impl Throttle {
    /// Throttles the evictions of ServiceAccount `namespace/account` (whose requests are
    /// made with `account_client`, holding `token`); returns once a probe eviction of that
    /// account has met the server's 429.
    pub async fn start(
        cp: &ControlPlane,
        namespace: &str,
        account: &str,
        token: &str,
        account_client: &Client,
    ) -> Result<Throttle> {
        let admin = cp.admin_client().await?;
        let name = format!("reclaim-throttle-{namespace}-{account}");
        let levels: Api<DynamicObject> =
            Api::all_with(admin.clone(), &flow_control("PriorityLevelConfiguration"));
        let level = json!({
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "PriorityLevelConfiguration",
            "metadata": {"name": name},
            "spec": {"type": "Limited", "limited": {
                "nominalConcurrencyShares": 0, "lendablePercent": 0, "borrowingLimitPercent": 0,
                "limitResponse": {"type": "Reject"},
            }},
        });
        levels
            .create(&PostParams::default(), &serde_json::from_value(level)?)
            .await
            .context("creating the PriorityLevelConfiguration")?;
        let schemas: Api<DynamicObject> = Api::all_with(admin.clone(), &flow_control("FlowSchema"));
        let schema = json!({
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema",
            "metadata": {"name": name},
            "spec": {
                "priorityLevelConfiguration": {"name": name},
                // Before every default FlowSchema (the lowest default is 1000 for leases).
                "matchingPrecedence": 100,
                "distinguisherMethod": {"type": "ByUser"},
                "rules": [{
                    "subjects": [{"kind": "ServiceAccount", "serviceAccount": {"namespace": namespace, "name": account}}],
                    "resourceRules": [{"verbs": ["create"], "apiGroups": [""], "resources": ["pods/eviction"], "namespaces": ["*"]}],
                }],
            },
        });
        schemas
            .create(&PostParams::default(), &serde_json::from_value(schema)?)
            .await
            .context("creating the FlowSchema")?;

        // The configuration takes effect asynchronously: hold the seat and probe until the
        // probe is rejected, starting over with a new slow client if the first one came
        // before the FlowSchema did.
        let probe = PodRef {
            namespace,
            name: "throttle-probe",
            uid: "00000000-0000-0000-0000-000000000000",
        };
        for _ in 0..60 {
            let mut slow_client = hold_a_seat(cp, namespace, token)?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            match evict(account_client, probe, None).await {
                Ok(Answer::Throttled { .. }) => {
                    return Ok(Throttle {
                        admin,
                        name,
                        slow_client,
                    });
                }
                Ok(_) | Err(_) => {
                    let _ = slow_client.kill();
                    let _ = slow_client.wait();
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("the FlowSchema never throttled the probe eviction")
    }

    /// Lifts the throttling: the slow client goes (freeing the seat), then the
    /// FlowSchema and its priority level.
    pub async fn end(mut self) -> Result<()> {
        let _ = self.slow_client.kill();
        let _ = self.slow_client.wait();
        for kind in ["FlowSchema", "PriorityLevelConfiguration"] {
            Api::<DynamicObject>::all_with(self.admin.clone(), &flow_control(kind))
                .delete(&self.name, &DeleteParams::default())
                .await
                .with_context(|| format!("deleting {kind} {}", self.name))?;
        }
        Ok(())
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        let _ = self.slow_client.kill();
        let _ = self.slow_client.wait();
    }
}

/// Sends the headers of an eviction as the account, promising a body it never sends.
fn hold_a_seat(cp: &ControlPlane, namespace: &str, token: &str) -> Result<Child> {
    let address = cp.server.trim_start_matches("https://");
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet", "-connect", address, "-CAfile"])
        .arg(&cp.ca_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("running openssl s_client")?;
    let headers = format!(
        "POST /api/v1/namespaces/{namespace}/pods/throttle-seat/eviction HTTP/1.1\r\n\
         Host: {address}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 4096\r\n\r\n"
    );
    child
        .stdin
        .as_mut()
        .context("s_client's stdin")?
        .write_all(headers.as_bytes())?;
    Ok(child)
}
