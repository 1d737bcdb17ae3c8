"""The findings watch of sharded replicas (kube/watch.py) against the real API server: every write made
after it starts is handed over once, through the ends of its watch requests; findings that existed
before are not listed to it."""

import threading
import time

from conftest import wait_for
from kubernetes import client, config

from auditwatch.kube import watch

NAMESPACE = "findings-watch"


def finding(name: str, count: int) -> dict:
    return {
        "apiVersion": "auditwatch.io/v1alpha1",
        "kind": "DetectionFinding",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"auditwatch.io/detection": "seed"}},
        "spec": {"detection": "seed", "key": {"user": name}, "severity": "low", "message": name},
        "status": {"count": count},
    }


def test_each_write_from_the_start_on_is_handed_over_once(cluster, monkeypatch):
    monkeypatch.setattr(watch, "SERVER_TIMEOUT", 1)  # the API server ends each watch request after 1 s
    cluster.kubectl("create", "namespace", NAMESPACE)
    api = client.CustomObjectsApi(config.new_client_from_config(config_file=str(cluster.admin_kubeconfig)))
    args = ("auditwatch.io", "v1alpha1", NAMESPACE, "detectionfindings")
    api.create_namespaced_custom_object(*args, finding("before", 1))
    seen, lock = [], threading.Lock()

    def on_write(obj):
        with lock:
            seen.append((obj["metadata"]["name"], obj["status"]["count"], obj["metadata"]["resourceVersion"]))

    w = watch.FindingsWatch((NAMESPACE,), on_write, api=api)
    w.start()
    try:
        assert w.wait_started(30)
        api.create_namespaced_custom_object(*args, finding("after", 1))
        for count in range(2, 6):  # writes spread over several watch requests
            time.sleep(0.7)
            api.patch_namespaced_custom_object(*args, "after", {"status": {"count": count}})
        wait_for(lambda: len(seen) >= 5, what=lambda: f"5 writes handed over, not {seen}")
        time.sleep(2.5)  # two more ends of a request: nothing is handed over again
    finally:
        w.stop()
    assert [(name, count) for name, count, _ in seen] == [("after", n) for n in range(1, 6)]
    assert len({version for _, _, version in seen}) == 5
