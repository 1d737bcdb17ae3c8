"""Every finding written from now on, by anyone: a plain watch, from the current resourceVersion.

Sharded replicas hand each write to the detection that holds the finding (findings/peers.py), so that
their next write's precondition is the latest version. Only writes from now on matter: a detection
reads its own findings when it starts. So the watch starts at the collection's current version (a
list of one object gives it), not with the whole collection: kopf's index of the findings, used
before, took every finding in at start and held the operator's daemons back until it had, more
than 10 minutes with 10,000 findings and three replicas (bench/findings_memory.py).

A missed write costs a 409 Conflict and a read at the next write, never a count: so a watch that
breaks resumes where it was, one whose version expired (410 Gone) starts again from now, and an
error waits and retries. The watch runs in a thread of its own (the client is synchronous) and calls
``on_write`` there; the caller moves the call onto its event loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from auditwatch.api.models import GROUP, VERSION

log = logging.getLogger(__name__)

PLURAL = "detectionfindings"
SERVER_TIMEOUT = 290  # seconds: the API server ends each watch request, and it is made again
RETRY_SECONDS = 5.0


class FindingsWatch:
    """Findings written in ``namespaces`` (all of them when empty), each passed to ``on_write``."""

    def __init__(
        self,
        namespaces: tuple[str, ...],
        on_write: Callable[[dict[str, Any]], object],
        api: client.CustomObjectsApi | None = None,
    ) -> None:
        self.namespaces, self.on_write = namespaces or ("",), on_write
        self.api = api or client.CustomObjectsApi()
        self._from_now = {namespace: threading.Event() for namespace in self.namespaces}
        self._stopped = threading.Event()
        self._watches: list[watch.Watch] = []

    def start(self) -> None:
        for namespace in self.namespaces:
            w = watch.Watch()
            self._watches.append(w)
            threading.Thread(target=self._follow, args=(namespace, w), name="findings-watch", daemon=True).start()

    def wait_started(self, timeout: float) -> bool:
        """Whether every namespace's watch knows the version it starts from (writes after it are seen)."""
        deadline = time.monotonic() + timeout
        return all(e.wait(max(0.0, deadline - time.monotonic())) for e in self._from_now.values())

    def stop(self) -> None:
        """The threads end at their next event or the server's timeout; they hold nothing to flush."""
        self._stopped.set()
        for w in self._watches:
            w.stop()

    def _lister(self, namespace: str) -> tuple[Callable[..., Any], tuple[str, ...]]:
        """The list call (a watch with ``watch=True``) for one namespace, or all with ``""``."""
        if namespace:
            return self.api.list_namespaced_custom_object, (GROUP, VERSION, namespace, PLURAL)
        return self.api.list_cluster_custom_object, (GROUP, VERSION, PLURAL)

    def _now(self, namespace: str) -> str:
        """The collection's current resourceVersion, from a list of at most one object."""
        fn, args = self._lister(namespace)
        return str(fn(*args, limit=1)["metadata"]["resourceVersion"])

    def _follow(self, namespace: str, w: watch.Watch) -> None:
        version = ""
        while not self._stopped.is_set():
            try:
                if not version:
                    version = self._now(namespace)
                    self._from_now[namespace].set()
                version = self._stream(namespace, w, version)
            except Exception as exc:  # also connection refused or reset: the API server restarting
                if isinstance(exc, ApiException) and exc.status == 410:  # expired: costs conflicts, no more
                    log.info("findings watch in %s: version %s expired, watching from now", namespace or "*", version)
                    version = ""
                    continue
                log.warning("findings watch in %s: %s; again in %.0f s", namespace or "*", exc, RETRY_SECONDS)
                self._stopped.wait(RETRY_SECONDS)

    def _stream(self, namespace: str, w: watch.Watch, version: str) -> str:
        """One watch request from ``version``; returns the version to go on from."""
        fn, args = self._lister(namespace)
        for event in w.stream(
            fn, *args, resource_version=version, allow_watch_bookmarks=True, timeout_seconds=SERVER_TIMEOUT
        ):
            obj = event["raw_object"]
            version = obj.get("metadata", {}).get("resourceVersion") or version
            if event["type"] in ("ADDED", "MODIFIED"):
                self.on_write(obj)
        return version
