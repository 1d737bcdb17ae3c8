"""The few Kubernetes API calls the operator makes, async over the ``kubernetes`` client.

The client is blocking, so every call runs in a worker thread (``asyncio.to_thread``); kopf's own
watching is unaffected. Every write, Events included, waits for the operator's write budget
(kube/budget.py); reads do not.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from auditwatch.api.models import GROUP, HUNT_LABEL, VERSION
from auditwatch.kube.budget import Priority, WriteBudget

__all__ = ["UNREACHABLE", "ApiException", "Kube", "MakeBody", "PostEvent", "load_config", "own_findings"]

UNREACHABLE = 0  # an ApiException's status when no answer came

# (object reference, event type, reason, message) -> posted; kopf.event in the operator, a list in tests.
PostEvent = Callable[[dict[str, Any], str, str, str], None]
# A write's body, made when the write budget lets the write go (not while it waits).
MakeBody = Callable[[], dict[str, Any]]


def load_config() -> None:
    """In-cluster credentials when running in a Pod, else the kubeconfig ($KUBECONFIG)."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))  # read now, not at import


def own_findings(detection: str) -> str:
    """The label selector of a detection's findings that the operator counts into: not a hunt's."""
    return f"{GROUP}/detection={detection},!{HUNT_LABEL}"


async def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn`` in a thread. An API server that cannot be reached (refused, reset, timed out: urllib3's
    errors) raises an ``ApiException`` with status 0, so that every caller handles it as it handles an
    answer it cannot use: a write stays pending and is tried again, a status waits for the next one."""
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except urllib3.exceptions.HTTPError as exc:
        raise ApiException(status=UNREACHABLE, reason=f"API server unreachable: {exc}") from exc


class Kube:
    def __init__(self, budget: WriteBudget, post: PostEvent) -> None:
        self.custom = client.CustomObjectsApi()
        self.coordination = client.CoordinationV1Api()
        self.budget, self._post = budget, post

    async def post_event(self, obj: dict[str, Any], kind: str, reason: str, message: str) -> None:
        async with self.budget.slot("event", Priority.EVENT):
            self._post(obj, kind, reason, message)

    async def create_finding(self, namespace: str, body: MakeBody) -> dict[str, Any]:
        """Create a finding, its status (count, checkpoints) included: findings have no status subresource.
        ``body()`` is called when the write budget lets the create go, so it carries what is counted then."""
        async with self.budget.slot("finding_create", Priority.NEW):
            return await _call(
                self.custom.create_namespaced_custom_object, GROUP, VERSION, namespace, "detectionfindings", body()
            )

    async def get_finding(self, namespace: str, name: str) -> dict[str, Any]:
        return await _call(
            self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, "detectionfindings", name
        )

    async def patch_finding(
        self, namespace: str, name: str, patch: MakeBody, since: float | None = None
    ) -> dict[str, Any]:
        """A merge patch of a finding (its status: no subresource), made by ``patch()`` when the write budget
        lets it go; a ``metadata.resourceVersion`` in it makes the API server refuse it (409) if the object
        changed since."""
        async with self.budget.slot("finding_status", Priority.UPDATE, since):
            return await _call(
                self.custom.patch_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                "detectionfindings",
                name,
                patch(),
            )

    async def list_findings(self, namespace: str, detection: str) -> list[dict[str, Any]]:
        result = await _call(
            self.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            "detectionfindings",
            label_selector=own_findings(detection),
        )
        return list(result.get("items", []))

    async def delete_finding(self, namespace: str, name: str, resource_version: str = "") -> bool:
        """Delete a finding; False when it is gone already or (with ``resource_version``) changed since."""
        precondition = client.V1Preconditions(resource_version=resource_version or None)
        options = client.V1DeleteOptions(preconditions=precondition)
        try:
            async with self.budget.slot("finding_delete", Priority.UPDATE):
                await _call(
                    self.custom.delete_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    namespace,
                    "detectionfindings",
                    name,
                    body=options,
                )
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise
            return False
        return True

    async def put_report(self, body: dict[str, Any]) -> None:
        """Create or replace an OpenReports Report (findings/report.py): a merge patch of the whole
        object, or a create when there is none yet."""
        meta = body["metadata"]
        args = ("openreports.io", "v1alpha1", meta["namespace"], "reports")
        async with self.budget.slot("report", Priority.UPDATE):
            try:
                await _call(self.custom.patch_namespaced_custom_object, *args, meta["name"], body)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                await _call(self.custom.create_namespaced_custom_object, *args, body)

    async def get_detection(self, namespace: str, name: str) -> dict[str, Any]:
        return await _call(self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, "auditdetections", name)

    async def patch_detection_status(
        self,
        namespace: str,
        name: str,
        status: dict[str, Any],
        since: float | None = None,
        resource_version: str = "",
    ) -> None:
        """A merge patch of a detection's status; with ``resource_version``, refused (409) if it changed."""
        body: dict[str, Any] = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        async with self.budget.slot("detection_status", Priority.UPDATE, since):
            await _call(
                self.custom.patch_namespaced_custom_object_status,
                GROUP,
                VERSION,
                namespace,
                "auditdetections",
                name,
                body,
            )

    async def renew_lease(self, namespace: str, body: dict[str, Any]) -> None:
        """Create or renew a Lease (runtime/shards.py): a merge patch, a create when there is none. Not within the
        write budget: a heartbeat that waits behind findings would make a busy replica look dead."""
        name = body["metadata"]["name"]
        try:
            await _call(
                self.coordination.patch_namespaced_lease,
                name,
                namespace,
                body,
                _content_type="application/merge-patch+json",
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            await _call(self.coordination.create_namespaced_lease, namespace, body)

    async def list_leases(self, namespace: str, label: str) -> list[tuple[str, str]]:
        """(holder identity, resourceVersion) of each Lease with ``label``."""
        result = await _call(self.coordination.list_namespaced_lease, namespace, label_selector=label)
        return [(item.spec.holder_identity or "", item.metadata.resource_version) for item in result.items]
