"""The Dockerfile and the manifests agree: the commands the workloads run are the paths
the image holds, the image runs as the user the manifests require, and it is built from
the committed lock file."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def final_stage():
    dockerfile = (ROOT / "Dockerfile").read_text()
    return dockerfile.split("\nFROM ")[-1]


def test_the_image_is_minimal_and_runs_as_nonroot():
    stage = final_stage()
    assert stage.startswith("gcr.io/distroless/cc-debian12:nonroot")
    assert "USER 65532:65532" in stage
    assert "RUN " not in stage, "nothing is run in the final stage: it has no shell"


def test_the_build_is_a_locked_release_build():
    assert re.search(r"cargo build --release --locked", (ROOT / "Dockerfile").read_text())


def test_the_manifests_run_what_the_image_holds_as_the_user_it_has():
    copied = re.search(r"COPY --from=build (.+) /\n", final_stage()).group(1).split()
    in_image = {"/" + Path(p).name for p in copied}
    docs = [d for f in (ROOT / "manifests/base").rglob("*.yaml") for d in yaml.safe_load_all(f.read_text()) if d]
    workloads = [d for d in docs if d["kind"] in {"DaemonSet", "Deployment"}]
    assert len(workloads) == 2
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        for container in pod["containers"]:
            assert container["command"][0] in in_image, container["command"]
        assert pod["securityContext"]["runAsUser"] == 65532


def test_the_image_holds_the_kubectl_plugin_too():
    copied = re.search(r"COPY --from=build (.+) /\n", final_stage()).group(1).split()
    assert "/usr/local/bin/kubectl-reclaim" in copied
    assert "-p kubectl-reclaim" in (ROOT / "Dockerfile").read_text()
