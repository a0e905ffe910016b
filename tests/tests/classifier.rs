//! The classifier's rules applied to objects read back from a real API server: pods
//! terminated as the kubelet reports them, on a node whose notice the agent wrote.

use anyhow::Result;
use jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use reclaim_agent::node::{apply_notice_patch, record_of, update_node};
use reclaim_classifier::verdict::{Verdict, classify, failure_of};
use reclaim_model::{Notice, NoticeKind, PodInterruption, Provider};
use reclaim_testbed::kubelet::Exit;
use reclaim_testbed::{ControlPlane, TestKubelet, TestNode, TestPod};

#[tokio::test]
async fn verdicts_from_pods_and_nodes_as_the_server_returns_them() -> Result<()> {
    let k = TestKubelet::new(ControlPlane::shared().admin_client().await?, "verdicts").await?;
    let (noticed, quiet) = (k.node_name("spot-noticed"), k.node_name("spot-quiet"));
    k.register_node(TestNode::spot(&noticed)).await?;
    k.register_node(TestNode::spot(&quiet)).await?;
    let notice = Notice {
        provider: Provider::Aws,
        kind: NoticeKind::SpotInterruption,
        event_id: "instance-action-terminate".into(),
        notice_time: Timestamp::now() - SignedDuration::from_secs(5),
        deadline: Some(Timestamp::now() + SignedDuration::from_secs(115)),
        detected_at: Timestamp::now(),
    };
    update_node(&k.nodes(), &noticed, |n| apply_notice_patch(n, &notice)).await?;
    let node_notice = record_of(&k.nodes().get(&noticed).await?)
        .notice
        .expect("the notice reads back");

    let cases = [
        ("killed", &noticed, Exit::KILLED, false),
        ("oom", &noticed, Exit::OOM_KILLED, false),
        ("bug", &noticed, Exit::FAILED, false),
        ("annotated", &noticed, Exit::KILLED, true),
        ("elsewhere", &quiet, Exit::KILLED, false),
    ];
    for (name, node, exit, annotated) in cases {
        let mut pod = TestPod::new(name);
        if annotated {
            pod = pod.annotation(
                "reclaim.dev/interruption",
                &node_notice.for_pod(node).to_json(),
            );
        }
        k.run_pod(node, pod).await?;
        k.terminate(name, exit).await?;
    }

    let verdict = |name: &'static str| {
        let k = k.clone();
        let (noticed, node_notice) = (noticed.clone(), node_notice.clone());
        async move {
            let pod = k.pods().get(name).await?;
            let record = pod
                .annotations()
                .get("reclaim.dev/interruption")
                .map(|t| PodInterruption::from_json(t))
                .transpose()?;
            let node = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            let seen = (node == noticed).then_some((node.as_str(), &node_notice));
            anyhow::Ok(classify(&failure_of(&pod, false), record.as_ref(), seen))
        }
    };
    let Verdict::SpotCaused(evidence) = verdict("killed").await? else {
        panic!("137/Error on a noticed node is spot-caused")
    };
    assert_eq!(
        (evidence.node.as_str(), evidence.exit_code),
        (noticed.as_str(), Some(137))
    );
    assert_eq!(evidence.signals, ["exit-137", "node-notice"]);
    let Verdict::SpotCaused(evidence) = verdict("annotated").await? else {
        panic!("an annotated pod is spot-caused")
    };
    assert!(evidence.signals.contains(&"pod-annotation".to_owned()));
    assert!(
        matches!(verdict("oom").await?, Verdict::NotSpot(ref why) if why.contains("OOMKilled"))
    );
    assert!(
        matches!(verdict("bug").await?, Verdict::NotSpot(ref why) if why.contains("exit code 1"))
    );
    assert!(matches!(verdict("elsewhere").await?, Verdict::Unknown(_)));
    Ok(())
}
