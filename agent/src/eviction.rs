//! The Eviction API: the only way to remove a pod that respects its PodDisruptionBudget
//! and still runs its preStop hook (the trigger for Spark's decommissioning).
//!
//! Evictions are `policy/v1`, the only version every supported server takes (the
//! agent refuses older servers at start: [`reclaim_service::server_version`]).
//! The body is built here rather than with `kube::Api::evict`, which
//! sends no apiVersion and names the delete options `delete_options`, so a shortened
//! grace period would be silently ignored by the server. Every request carries the UID
//! of the pod the drain judged: a pod deleted and recreated under the same name by its
//! StatefulSet is another pod, and the server answers 409 instead of touching it.

use std::time::Duration;

use http::{Method, Request};
use http_body_util::BodyExt;
use kube::Client;
use serde_json::json;

/// What the server answered to one eviction (or deletion) request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 201 (eviction) or 200 (deletion): the pod is being deleted gracefully.
    Accepted,
    /// 429 from a PodDisruptionBudget: not now.
    BudgetRefused,
    /// 429 from API Priority and Fairness or the max-inflight limit: the server is
    /// overloaded; ask again after `Retry-After`.
    Throttled { retry_after: Option<Duration> },
    /// 500: more than one PodDisruptionBudget selects the pod, which the Eviction API
    /// refuses until someone fixes the budgets.
    MultipleBudgets,
    /// 404, or 409 on the UID precondition: the pod the drain judged is gone (a pod of
    /// the same name may exist, but it is another pod).
    Gone,
}

impl Answer {
    pub fn label(self) -> &'static str {
        match self {
            Answer::Accepted => "accepted",
            Answer::BudgetRefused => "budget_refused",
            Answer::Throttled { .. } => "throttled",
            Answer::MultipleBudgets => "multiple_budgets",
            Answer::Gone => "gone",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EvictionError {
    #[error("{request} of {pod} answered HTTP {code}: {message}")]
    Status {
        request: &'static str,
        pod: String,
        code: u16,
        message: String,
    },
    #[error("{request} of {pod} failed: {source}")]
    Transport {
        request: &'static str,
        pod: String,
        #[source]
        source: kube::Error,
    },
}

/// One pod as the drain judged it: the request goes to that pod only (UID precondition).
#[derive(Debug, Clone, Copy)]
pub struct PodRef<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
}

impl std::fmt::Display for PodRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Requests the eviction of `pod`. `grace_period_seconds` overrides its own
/// terminationGracePeriodSeconds (used to fit a deadline); `None` keeps it.
pub async fn evict(
    client: &Client,
    pod: PodRef<'_>,
    grace_period_seconds: Option<i64>,
) -> Result<Answer, EvictionError> {
    let mut options = json!({"preconditions": {"uid": pod.uid}});
    if let Some(grace) = grace_period_seconds {
        options["gracePeriodSeconds"] = json!(grace);
    }
    let body = json!({
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": pod.name, "namespace": pod.namespace},
        "deleteOptions": options,
    });
    let path = format!(
        "/api/v1/namespaces/{}/pods/{}/eviction",
        pod.namespace, pod.name
    );
    send(client, Method::POST, &path, body, "eviction", pod).await
}

/// Deletes `pod` with `grace_seconds`, whatever its budget says.
pub async fn delete(
    client: &Client,
    pod: PodRef<'_>,
    grace_seconds: i64,
) -> Result<Answer, EvictionError> {
    let body = json!({
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "gracePeriodSeconds": grace_seconds,
        "preconditions": {"uid": pod.uid},
    });
    let path = format!("/api/v1/namespaces/{}/pods/{}", pod.namespace, pod.name);
    send(client, Method::DELETE, &path, body, "deletion", pod).await
}

/// Sends the request and reads what the answer means. The raw response is read (not
/// kube's typed error) because a throttling server's `Retry-After` is a header.
async fn send(
    client: &Client,
    method: Method,
    path: &str,
    body: serde_json::Value,
    request: &'static str,
    pod: PodRef<'_>,
) -> Result<Answer, EvictionError> {
    let transport = |source| EvictionError::Transport {
        request,
        pod: pod.to_string(),
        source,
    };
    let http_request = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body.to_string().into_bytes().into())
        .expect("a pod request is always well-formed");
    let response = client.send(http_request).await.map_err(transport)?;
    let code = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| transport(kube::Error::Service(Box::new(e))))?
        .to_bytes();
    let status: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let message = status["message"].as_str().unwrap_or_default().to_owned();
    match answer(code, &status, retry_after) {
        Some(answer) => Ok(answer),
        None => Err(EvictionError::Status {
            request,
            pod: pod.to_string(),
            code,
            message,
        }),
    }
}

/// What an answer means; `None` for an error the drain cannot act on (it retries).
pub fn answer(
    code: u16,
    status: &serde_json::Value,
    retry_after: Option<Duration>,
) -> Option<Answer> {
    let message = status["message"].as_str().unwrap_or_default();
    let budget_cause = status["details"]["causes"]
        .as_array()
        .is_some_and(|causes| causes.iter().any(|c| c["reason"] == "DisruptionBudget"));
    match code {
        200..=299 => Some(Answer::Accepted),
        404 | 409 => Some(Answer::Gone),
        429 if budget_cause || message.contains("disruption budget") => Some(Answer::BudgetRefused),
        429 => Some(Answer::Throttled { retry_after }),
        500 if message.contains("more than one PodDisruptionBudget") => {
            Some(Answer::MultipleBudgets)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_refusals_throttling_and_duplicate_budgets_are_told_apart() {
        let budget = json!({"kind": "Status", "code": 429, "reason": "TooManyRequests",
            "message": "Cannot evict pod as it would violate the pod's disruption budget.",
            "details": {"causes": [{"reason": "DisruptionBudget", "message": "The disruption budget executors needs 1 healthy pods and has 1 currently"}]}});
        assert_eq!(answer(429, &budget, None), Some(Answer::BudgetRefused));
        let throttled = json!({"kind": "Status", "code": 429, "reason": "TooManyRequests",
            "message": "Too many requests, please try again later.", "details": {"retryAfterSeconds": 1}});
        let after = Some(Duration::from_secs(1));
        assert_eq!(
            answer(429, &throttled, after),
            Some(Answer::Throttled { retry_after: after })
        );
        let two = json!({"kind": "Status", "code": 500,
            "message": "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."});
        assert_eq!(answer(500, &two, None), Some(Answer::MultipleBudgets));
        let replaced = json!({"kind": "Status", "code": 409, "reason": "Conflict",
            "message": "Precondition failed: UID in precondition: 1234, UID in object meta: 5678"});
        assert_eq!(answer(409, &replaced, None), Some(Answer::Gone));
        assert_eq!(answer(201, &json!({}), None), Some(Answer::Accepted));
        assert_eq!(answer(403, &json!({"message": "forbidden"}), None), None);
        assert_eq!(
            answer(
                500,
                &json!({"message": "etcdserver: request timed out"}),
                None
            ),
            None
        );
    }
}
