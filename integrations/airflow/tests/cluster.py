"""The Python side of the test bed: the Rust workspace's local control plane and
classifier binaries, and a minimal kubelet (bind pods, report them running, end them
the way a kubelet reports an exit, finish deletions)."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

REPO = Path(__file__).resolve().parents[3]


def binary(name: str) -> Path:
    bin_dir = Path(os.environ.get("RECLAIM_BIN_DIR", REPO / "target" / "debug"))
    path = bin_dir / name
    if not path.exists():
        raise RuntimeError(f"{path} is missing: build the workspace first (cargo build --workspace --bins)")
    return path


def rfc3339(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class ControlPlane:
    """etcd, kube-apiserver (HTTPS, RBAC) and kube-controller-manager, for this session."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [binary("local-control-plane")], stdout=subprocess.PIPE, text=True
        )
        self.kubeconfig = None
        for line in self.process.stdout:
            if line.startswith("export KUBECONFIG="):
                self.kubeconfig = line.split("=", 1)[1].strip()
            if line.startswith("ready"):
                break
        if self.kubeconfig is None:
            raise RuntimeError("the local control plane did not start; see its stderr above")
        self.api_client = config.new_client_from_config(config_file=self.kubeconfig)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


class Binary:
    """One of the real Reclaim binaries, its log kept in a file for the test to read."""

    def __init__(self, cp: ControlPlane, name: str, args: list[str]) -> None:
        env = dict(os.environ, KUBECONFIG=cp.kubeconfig, NO_COLOR="1")
        self.log_file = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [binary(name), *args, "--metrics-addr", "127.0.0.1:0"],
            env=env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return Path(self.log_file.name).read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        print(f"--- {self.process.args[0]} log ---\n{self.log()}")
        os.unlink(self.log_file.name)


class Classifier(Binary):
    """The real reclaim-classifier binary, scoped to one namespace."""

    def __init__(self, cp: ControlPlane, namespace: str) -> None:
        super().__init__(
            cp,
            "reclaim-classifier",
            ["--namespace", namespace, "--lease-namespace", namespace, "--identity", "pytest"],
        )


class Agent(Binary):
    """The real reclaim-agent binary guarding ``node``, its metadata at ``metadata_url``."""

    def __init__(self, cp: ControlPlane, node: str, metadata_url: str) -> None:
        super().__init__(
            cp,
            "reclaim-agent",
            ["--node-name", node, "--metadata-url", metadata_url, "--safety-margin", "5s"],
        )


def eventually(what: str, check, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


class Kubelet:
    """Plays the kubelet for the pods of one namespace."""

    def __init__(self, cp: ControlPlane, namespace: str) -> None:
        self.core = client.CoreV1Api(cp.api_client)
        self.namespace = namespace

    def register_spot_node(self, name: str, notice: bool) -> None:
        """An EKS spot node; with ``notice``, tainted and annotated as the agent does."""
        metadata = {"name": name, "labels": {"karpenter.sh/capacity-type": "spot"}}
        spec = {"providerID": "aws:///us-east-1a/i-0123456789abcdef0"}
        if notice:
            metadata["annotations"] = {"reclaim.dev/notice": json.dumps(self.notice())}
            spec["taints"] = [{"key": "reclaim.dev/interruption", "value": "spot-interruption", "effect": "NoSchedule"}]
        self.core.create_node({"apiVersion": "v1", "kind": "Node", "metadata": metadata, "spec": spec})

    @staticmethod
    def notice() -> dict:
        now = datetime.now(timezone.utc)
        return {
            "provider": "aws",
            "kind": "spot-interruption",
            "eventId": "instance-action-terminate",
            "noticeTime": rfc3339(now - timedelta(seconds=5)),
            "deadline": rfc3339(now + timedelta(seconds=115)),
            "detectedAt": rfc3339(now),
        }

    def mark_interrupted(self, pod: str, node: str) -> None:
        """What the agent writes on a pod before it evicts it."""
        record = dict(self.notice(), node=node)
        metadata = {
            "labels": {"reclaim.dev/interrupted": record["kind"]},
            "annotations": {"reclaim.dev/interruption": json.dumps(record)},
        }
        self.core.patch_namespaced_pod(pod, self.namespace, {"metadata": metadata})

    def create_pod(self, name: str, labels: dict | None = None, owner: dict | None = None) -> None:
        metadata = {"name": name, "labels": labels or {}}
        if owner:
            metadata["ownerReferences"] = [owner]
        self.core.create_namespaced_pod(
            self.namespace,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": metadata,
                "spec": {"containers": [{"name": "base", "image": "registry.invalid/reclaim/task:1"}]},
            },
        )

    def start(self, pod: str, node: str) -> None:
        body = client.V1Binding(
            metadata=client.V1ObjectMeta(name=pod),
            target=client.V1ObjectReference(kind="Node", name=node, api_version="v1"),
        )
        self.core.create_namespaced_pod_binding(pod, self.namespace, body, _preload_content=False)
        now = rfc3339(datetime.now(timezone.utc))
        self._status(pod, "Running", {"running": {"startedAt": now}}, ready=True)

    def end(self, pod: str, exit_code: int, reason: str) -> None:
        now = rfc3339(datetime.now(timezone.utc))
        terminated = {"exitCode": exit_code, "reason": reason, "startedAt": now, "finishedAt": now}
        self._status(pod, "Failed" if exit_code else "Succeeded", {"terminated": terminated}, ready=False)

    def _status(self, pod: str, phase: str, state: dict, ready: bool) -> None:
        current = self.core.read_namespaced_pod(pod, self.namespace)
        status = {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [
                {
                    "name": c.name,
                    "image": c.image,
                    "imageID": "",
                    "ready": ready,
                    "restartCount": 0,
                    "started": ready,
                    "state": state,
                }
                for c in current.spec.containers
            ],
        }
        self.core.patch_namespaced_pod_status(pod, self.namespace, {"status": status})

    def next_new_pod(self, timeout: float = 60.0) -> str:
        """The next pod created in the namespace that no node runs yet."""

        def unbound():
            pods = self.core.list_namespaced_pod(self.namespace).items
            return next((p.metadata.name for p in pods if not p.spec.node_name), None)

        return eventually("a pod to run", unbound, timeout)

    def finish_deletions(self, stop: threading.Event) -> None:
        """Removes pods being deleted gracefully, as a kubelet does once they stopped."""
        while not stop.is_set():
            for pod in self.core.list_namespaced_pod(self.namespace).items:
                if pod.metadata.deletion_timestamp:
                    try:
                        self.core.delete_namespaced_pod(pod.metadata.name, self.namespace, grace_period_seconds=0)
                    except ApiException as e:
                        if e.status != 404:
                            raise
            stop.wait(0.2)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"
