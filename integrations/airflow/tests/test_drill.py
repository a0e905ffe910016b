"""A drill through the real binaries on a control plane without the Interruption CRD:
both binaries say once that they keep no records, and do their whole job anyway, with a
metadata service that never answers; Airflow sees the verdict and that it was a drill."""

from kubernetes import client

from cluster import Agent, eventually, unique
from reclaim_airflow import Action, decide, verdict_of_object

CRD_MISSING = "the Interruption CRD (interruptions.reclaim.dev) is not installed"


def test_a_drill_without_the_crd_and_without_metadata_is_drained_and_marked(kubelet, classifier, control_plane, namespace):
    core = kubelet.core
    batch = client.BatchV1Api(control_plane.api_client)
    node = unique("spot-drill")
    kubelet.register_spot_node(node, notice=False)
    job = batch.create_namespaced_job(
        namespace,
        {
            "metadata": {"name": "nightly-load"},
            "spec": {
                "parallelism": 0,
                "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "registry.invalid/job:1"}]}},
            },
        },
    )
    owner = {"apiVersion": "batch/v1", "kind": "Job", "name": "nightly-load", "uid": job.metadata.uid, "controller": True}
    kubelet.create_pod("nightly-load-1", owner=owner)
    kubelet.start("nightly-load-1", node)
    # Nothing listens there: every metadata poll fails, for the whole test.
    agent = Agent(control_plane, node, "http://127.0.0.1:9")
    try:
        core.patch_node(node, {"metadata": {"annotations": {"reclaim.dev/drill": "spot-interruption,lead=30s"}}})

        def tainted():
            taints = core.read_node(node).spec.taints or []
            return any(t.key == "reclaim.dev/interruption" for t in taints)

        eventually("the drill's taint", tainted)
        eventually("the pod drained", lambda: not [p for p in core.list_namespaced_pod(namespace).items if p.metadata.name == "nightly-load-1"])

        def job_verdict():
            return verdict_of_object(batch.read_namespaced_job("nightly-load", namespace))

        verdict = eventually("the Job's verdict", job_verdict)
        assert verdict.spot and verdict.drill, verdict
        assert verdict.evidence["node"] == node
        assert decide(verdict).action is Action.RETRY
        eventually("the agent to say it keeps no record", lambda: CRD_MISSING in agent.log())
        eventually("the classifier to say it keeps no record", lambda: CRD_MISSING in classifier.log())
        assert agent.log().count(CRD_MISSING) == 1, agent.log()
        assert classifier.log().count(CRD_MISSING) == 1, classifier.log()
        assert agent.process.poll() is None and classifier.process.poll() is None, "both still running"
    finally:
        agent.stop()
