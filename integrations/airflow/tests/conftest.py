import sys
import threading
from pathlib import Path

import pytest
from kubernetes import client

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cluster import Classifier, ControlPlane, Kubelet, unique  # noqa: E402


@pytest.fixture(scope="session")
def control_plane():
    cp = ControlPlane()
    yield cp
    cp.stop()


@pytest.fixture
def namespace(control_plane):
    name = unique("airflow")
    client.CoreV1Api(control_plane.api_client).create_namespace({"metadata": {"name": name}})
    return name


@pytest.fixture
def kubelet(control_plane, namespace):
    k = Kubelet(control_plane, namespace)
    stop = threading.Event()
    finisher = threading.Thread(target=k.finish_deletions, args=(stop,), daemon=True)
    finisher.start()
    yield k
    stop.set()
    finisher.join()


@pytest.fixture
def classifier(control_plane, namespace):
    running = Classifier(control_plane, namespace)
    yield running
    running.stop()
