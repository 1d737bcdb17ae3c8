"""kopf wiring only: operator settings, the shared Services, and one daemon per AuditDetection.

kopf starts the daemon when a detection is created or found at start-up, and stops it (then
removes its finalizer) when the detection is deleted; findings go with the detection through their
ownerReferences. Spec changes are seen through kopf's live ``body`` by ``DetectionRuntime``.
A replica with a shard also renews its shard's Lease and watches the findings (runtime/services.py).
"""

from __future__ import annotations

import logging
import os
from typing import Any, cast

import kopf

from auditwatch.api.models import GROUP, VERSION
from auditwatch.api.settings import Settings
from auditwatch.engine.candidates import NATIVE
from auditwatch.kube.client import load_config
from auditwatch.runtime.detection import DetectionRuntime
from auditwatch.runtime.services import Services

SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


@kopf.on.startup()
async def configure(
    settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger | logging.LoggerAdapter[Any], **_: Any
) -> None:
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.reporting_component = "auditwatch"
    settings.posting.level = logging.WARNING  # kopf's own log lines as Events only when they matter
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.peering.standalone = True  # one replica (Deployment strategy Recreate), no peering CRD
    # No watching of CRDs and namespaces to find resources that appear later: the CRDs are installed
    # with the operator, and not needing list/watch on CRDs and namespaces keeps the RBAC minimal.
    settings.scanning.disabled = True
    load_config()
    logger.info(
        "candidate search: native (the C extension)"
        if NATIVE
        else "candidate search: Python, several times slower (the C extension was not built, or AUDITWATCH_NATIVE=0)"
    )
    given = memo.get("settings") or Settings()  # `auditwatch run` passes its own
    memo.services = await Services.start(given, memo.get("alerts"), post_event, logger)


@kopf.on.cleanup()
async def stop_services(memo: kopf.Memo, **_: Any) -> None:
    if memo.get("services") is not None:
        await memo.services.stop()


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a Pod, its ServiceAccount and the API server at $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT,
    as the Kubernetes client (kube/client.py) and client-go find them; else the kubeconfig $KUBECONFIG names
    when the operator starts."""
    if os.path.exists(SERVICE_ACCOUNT_TOKEN):
        return kopf.login_via_client(**kwargs)
    return kopf.login_with_kubeconfig(**kwargs)


# On deletion kopf sets `stopped` and, without a cancellation backoff, cancels the daemon at once; the
# daemon's last writes (findings, status) then outlive kopf's instant-exit check, and kopf looked again
# only after cancellation_timeout: the finalizer stayed up to 30 s (a rare test failure under load).
# With a backoff the daemon exits by itself (it checks `stopped` every flush interval) and kopf looks
# again within 5 s. backoff=5.0: retry soon after an API error.
@kopf.daemon(GROUP, VERSION, "auditdetections", cancellation_backoff=5.0, cancellation_timeout=30.0, backoff=5.0)
async def run_detection(
    body: kopf.Body,
    memo: kopf.Memo,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    stopped: kopf.DaemonStopped,
    **_: Any,
) -> None:
    await DetectionRuntime(memo.services, body, logger).run(stopped)


def post_event(obj: dict[str, Any], kind: str, reason: str, message: str) -> None:
    kopf.event(cast(kopf.Body, obj), type=kind, reason=reason, message=message)
