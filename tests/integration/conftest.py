"""Integration layer: the real kopf operator, in-process, against kmock's Kubernetes emulator.

kmock (by kopf's author) keeps objects in memory and serves list/watch/get/create/patch/delete over
HTTP. ``Emulator`` adds what the operator relies on and a plain emulator lacks: uid, generation
bumped on spec changes, creationTimestamp, label selectors on lists, and ownerReference garbage
collection. Both kopf and the ``kubernetes`` client talk to it through a kubeconfig, as in a cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import kmock
import kopf
import pydantic
import pytest
import pytest_asyncio
from kmock import KubernetesEmulator, ResourceInfo, action

import auditwatch.runtime.handlers  # noqa: F401 - registers the operator's handlers with kopf
from auditwatch.api.defaults import AUDIT_LOG_DIRS
from auditwatch.api.models import GROUP, VERSION, AuditDetectionStatus, DetectionFinding, DetectionFindingStatus
from auditwatch.api.settings import Settings
from auditwatch.devcluster.cluster import free_port

DETECTIONS = kmock.resource(GROUP, VERSION, "auditdetections")
FINDINGS = kmock.resource(GROUP, VERSION, "detectionfindings")
EVENTS = kmock.resource("", "v1", "events")
STATUS = {DETECTIONS: "status", FINDINGS: None}  # where each kind's status is written, as its CRD says


class Emulator(KubernetesEmulator):
    # Fault injection: (resource, subresource) pairs whose updates fail with a 500 and change nothing.
    refuse: set[tuple[Any, str | None]] = set()
    # Every status and finding the operator wrote, each checked against its model: (what, body).
    written: list[tuple[str, Any]] = []
    # The next this many writes of findings are answered 429 with Retry-After, as API Priority and Fairness does.
    throttle = 0

    async def _handle(self, request: Any) -> Any:
        self._check_against_the_models(request)
        if self.throttle and request.resource == FINDINGS and request.action in (action.CREATE, action.UPDATE):
            import aiohttp.web

            self.throttle -= 1
            return aiohttp.web.json_response({"kind": "Status", "code": 429, "reason": "TooManyRequests"},
                                             status=429, headers={"Retry-After": "1"})  # fmt: skip
        if request.action == action.UPDATE and (request.resource, request.subresource) in self.refuse:
            import aiohttp.web

            return aiohttp.web.json_response({"kind": "Status", "code": 500, "reason": "InternalError"}, status=500)
        if request.resource is not None and request.action == action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if "name" not in meta and "generateName" in meta:  # kopf's Events
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("generation", 1)
            meta.setdefault("creationTimestamp", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
            meta["resourceVersion"] = "1"
        if request.action == action.UPDATE and isinstance(request.data, list):
            # kopf guards its JSON patches with a test of resourceVersion; this emulator keeps no versions.
            request.data[:] = [op for op in request.data if op.get("path") != "/metadata/resourceVersion"]
        if request.action == action.LIST and request.params.get("labelSelector"):
            return await self._list_selected(request)
        response = await super()._handle(request)
        if request.action == action.CREATE and response.status == 200:
            response.set_status(201)  # as the API server answers; the kubernetes client reads no body from a 200
        if request.action == action.UPDATE and request.subresource is None and "spec" in (request.data or {}):
            await self._bump_generation(request)
        if request.action in (action.DELETE, action.UPDATE):
            await self._collect_garbage()
        return response

    def _check_against_the_models(self, request: Any) -> None:
        """What the schema declares is what the operator writes: validate each write by its model
        (the real API server checks the CRD schema; this emulator checks nothing)."""
        data = request.data if isinstance(request.data, dict) else {}
        try:
            if request.resource == FINDINGS and request.action == action.CREATE:
                self.written.append(("finding", DetectionFinding.model_validate(data)))
            elif (
                request.action == action.UPDATE
                and "status" in data
                and request.subresource == STATUS.get(request.resource, "")
            ):
                if request.resource == DETECTIONS:
                    self.written.append(("status", AuditDetectionStatus.model_validate(data["status"])))
                else:
                    self.written.append(("finding status", DetectionFindingStatus.model_validate(data["status"])))
        except pydantic.ValidationError as exc:
            self.written.append(("invalid", exc))

    async def _list_selected(self, request: Any) -> Any:
        terms = request.params["labelSelector"].split(",")
        wanted = dict(term.split("=", 1) for term in terms if "=" in term)
        absent = [term[1:] for term in terms if term.startswith("!")]

        def selected(labels: dict[str, str]) -> bool:
            return all(labels.get(k) == v for k, v in wanted.items()) and not any(k in labels for k in absent)

        items = [
            obj.raw for (resource, namespace, _), obj in self.objects.items()
            if resource == request.resource and not obj.deleted
            and (request.namespace is None or namespace == request.namespace)
            and selected(obj.raw.get("metadata", {}).get("labels") or {})
        ]  # fmt: skip
        import aiohttp.web

        return aiohttp.web.json_response({"metadata": {"resourceVersion": "1"}, "items": items})

    async def _bump_generation(self, request: Any) -> None:
        key = (request.resource, request.namespace, request.name)
        if key in self.objects and not self.objects[key].deleted:
            obj = self.objects[key]
            obj.patch({"metadata": {"generation": int(obj.raw["metadata"].get("generation", 1)) + 1}})
            await self._buses[request.resource].put({"type": "MODIFIED", "object": obj.raw})

    async def _collect_garbage(self) -> None:
        """The garbage collector's job: delete objects whose owners are gone."""
        alive = {obj.raw["metadata"].get("uid") for obj in self.objects.values() if not obj.deleted}
        for (resource, _, _), obj in list(self.objects.items()):
            if obj.deleted:
                continue
            owners = obj.raw.get("metadata", {}).get("ownerReferences") or []
            if owners and not any(o.get("uid") in alive for o in owners):
                raw = obj.raw
                obj.delete()
                await self._buses[resource].put({"type": "DELETED", "object": raw})


class Harness:
    """One emulated API server, the operator running in this event loop, and an audit log to write."""

    def __init__(self, emulator: Emulator, log: Path, kubeconfig: Path) -> None:
        self.k = emulator
        self.log = log
        self.kubeconfig = kubeconfig
        self.thread: threading.Thread | None = None
        self.webhook_port = free_port()
        self.settings = Settings(webhook_listen=f"127.0.0.1:{self.webhook_port}", webhook_insecure=True,
                                 webhook_spool=str(log.parent / "spool"),
                                 poll_seconds=0.02, flush_seconds=0.05, geoip_db=None,
                                 allow_paths=(*AUDIT_LOG_DIRS, str(log.parent)),
                                 detection_namespaces=("*",))  # fmt: skip
        self.stop_flag = threading.Event()

    async def start_operator(self) -> None:
        """The operator in a thread with its own event loop, as `auditwatch run` has one to itself."""
        self.stop_flag = threading.Event()
        ready = threading.Event()
        memo = kopf.Memo(settings=self.settings)
        operator = kopf.operator(clusterwide=True, standalone=True, stop_flag=self.stop_flag, ready_flag=ready,
                                 memo=memo)  # fmt: skip
        self.thread = threading.Thread(target=asyncio.run, args=(operator,), daemon=True)
        self.thread.start()
        assert await asyncio.to_thread(ready.wait, 10), "the operator did not start"

    async def stop_operator(self) -> None:
        assert self.thread is not None
        self.stop_flag.set()
        await asyncio.to_thread(self.thread.join, 30)
        assert not self.thread.is_alive(), "the operator did not stop within 30 s"

    def write(self, *lines: bytes) -> None:
        with open(self.log, "ab") as f:
            f.write(b"".join(lines))

    def objects(self, resource: Any) -> list[dict[str, Any]]:
        return [obj.raw for (res, _, _), obj in self.k.objects.items() if res == resource and not obj.deleted]

    def get(self, resource: Any, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        return next((o for o in self.objects(resource) if o["metadata"]["name"] == name
                     and namespace in (None, o["metadata"].get("namespace"))), None)  # fmt: skip

    async def apply(self, body: dict[str, Any]) -> None:
        """Create, or merge-patch the spec of, an object through the HTTP API (as kubectl would)."""
        from kubernetes import client

        api = client.CustomObjectsApi()
        name, ns = body["metadata"]["name"], body["metadata"]["namespace"]
        if self.get(DETECTIONS, name, ns) is None:
            await asyncio.to_thread(api.create_namespaced_custom_object, GROUP, VERSION, ns, "auditdetections", body)
        else:
            await asyncio.to_thread(api.patch_namespaced_custom_object, GROUP, VERSION, ns, "auditdetections", name,
                                    {"spec": body["spec"]})  # fmt: skip

    async def delete(self, name: str, namespace: str = "sec") -> None:
        from kubernetes import client

        await asyncio.to_thread(client.CustomObjectsApi().delete_namespaced_custom_object, GROUP, VERSION,
                                namespace, "auditdetections", name)  # fmt: skip


async def eventually(check: Callable[[], Any], timeout: float = 10, what: str | Callable[[], str] = "condition") -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    value: Any = None
    while asyncio.get_running_loop().time() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what() if callable(what) else what}; last value {value!r}")


@pytest_asyncio.fixture
async def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    emulator = Emulator()
    emulator.refuse = set()
    emulator.written = []
    emulator.throttle = 0
    for resource, kind in ((DETECTIONS, "AuditDetection"), (FINDINGS, "DetectionFinding")):
        verbs = {"list", "watch", "get", "create", "patch", "delete"}
        subresources = {STATUS[resource]} - {None}
        emulator.resources[resource] = ResourceInfo(
            kind=kind, singular=kind.lower(), namespaced=True, subresources=subresources, verbs=verbs
        )
    # kopf's start-up waits until discovery shows these, as a real API server does.
    emulator.resources[EVENTS] = ResourceInfo(kind="Event", singular="event", namespaced=True, verbs={"create"})
    emulator.resources[kmock.resource("", "v1", "namespaces")] = ResourceInfo(
        kind="Namespace", singular="namespace", namespaced=False, verbs={"list", "watch"}
    )
    emulator.resources[kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")] = ResourceInfo(
        kind="CustomResourceDefinition", singular="customresourcedefinition", namespaced=False,
        verbs={"list", "watch"})  # fmt: skip
    async with emulator, kmock.Server(emulator) as server:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
            "clusters": [{"name": "kmock", "cluster": {"server": str(server.url).rstrip("/")}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "u"}}],
        }))  # fmt: skip
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        from kubernetes import config

        config.load_kube_config(str(kubeconfig))
        h = Harness(emulator, tmp_path / "audit.log", kubeconfig)
        h.log.touch()
        await h.start_operator()
        try:
            yield h
        finally:
            with contextlib.suppress(Exception):
                await h.stop_operator()
        assert [w for w in emulator.written if w[0] == "invalid"] == [], "the operator wrote what its models refuse"


def detection_body(name: str, log: Path, search: str, group_by: list[str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "AuditDetection",
        "metadata": {"name": name, "namespace": "sec"},
        "spec": {"search": search, "sources": [{"name": "log", "file": {"path": str(log)}}],
                 "finding": {"groupBy": group_by or ["user", "src_ip"], "message": "calls from $src_ip$",
                             "ttl": "87600h"}},  # the fixtures' events are stamped 2026-11-27: never expired
    }  # fmt: skip


os.environ.setdefault("KOPF_NO_COLOR", "1")
