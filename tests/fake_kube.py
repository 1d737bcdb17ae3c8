"""The finding writer's side of the API, in memory, for the fast tests (the e2e tests use the real one)."""

import copy

from auditwatch.kube.budget import WriteBudget
from auditwatch.kube.client import ApiException


def merge_patch(target, patch):
    """RFC 7386, as the API server applies a merge patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


class FakeKube:
    """The writer's side of the API, in memory, with resourceVersions and merge patches as the API server
    does them (the e2e tests use the real one). Several writers may share one, as replicas share a cluster."""

    def __init__(self):
        self.objects: dict[str, dict] = {}
        self.calls: list[tuple[str, str]] = []
        self.events: list[tuple[str, str, str, str]] = []
        self.fail_writes = False  # every create and patch answered 500
        self.budget = WriteBudget()
        self.version = 0
        self.watchers = []  # called with every object written, as a watch delivers it

    def _stored(self, name, obj):
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        self.objects[name] = obj
        for watcher in self.watchers:
            watcher(copy.deepcopy(obj))
        return copy.deepcopy(obj)

    async def post_event(self, obj, kind, reason, message):
        self.events.append((obj["metadata"]["name"], kind, reason, message))

    async def create_finding(self, namespace, make_body):
        body = make_body()
        name = body["metadata"]["name"]
        self.calls.append(("create", name))
        if self.fail_writes:
            raise ApiException(status=500, reason="InternalError")
        if name in self.objects:
            raise ApiException(status=409, reason="AlreadyExists")
        return self._stored(name, {**copy.deepcopy(body), "metadata": {**body["metadata"], "uid": f"uid-{name}"}})

    async def get_finding(self, namespace, name):
        self.calls.append(("get", name))
        return copy.deepcopy(self.objects[name])

    async def patch_finding(self, namespace, name, make_patch, since=None):
        patch = make_patch()
        status, resource_version = patch["status"], patch.get("metadata", {}).get("resourceVersion", "")
        self.calls.append(("patch", name))
        if self.fail_writes:
            raise ApiException(status=500, reason="InternalError")
        if name not in self.objects:
            raise ApiException(status=404, reason="NotFound")
        obj = self.objects[name]
        if resource_version and resource_version != obj["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        return self._stored(name, {**obj, "status": merge_patch(obj.get("status", {}), status)})

    async def delete_finding(self, namespace, name, resource_version=""):
        self.calls.append(("delete", name))
        obj = self.objects.get(name)
        if obj is None or (resource_version and resource_version != obj["metadata"]["resourceVersion"]):
            return False
        del self.objects[name]
        return True
