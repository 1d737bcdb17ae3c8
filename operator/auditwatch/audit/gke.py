"""GKE's audit log entries (Cloud Logging ``protoPayload`` of type AuditLog) as audit.k8s.io Events.

GKE writes each Kubernetes audit event as a Cloud Logging entry, in Google's AuditLog shape
(``gcloud logging read 'resource.type="k8s_cluster"' --format=json``, or a log sink's files). The
fields the ESCU detections use are mapped to where kube-apiserver puts them:

| audit Event field | from the entry |
|---|---|
| ``user.username`` | ``protoPayload.authenticationInfo.principalEmail`` |
| ``user.groups`` | not logged by GKE; ``system:unauthenticated`` for ``system:anonymous``, as Kubernetes defines it |
| ``sourceIPs`` | ``protoPayload.requestMetadata.callerIp`` |
| ``userAgent`` | ``protoPayload.requestMetadata.callerSuppliedUserAgent`` |
| ``verb``, ``objectRef.resource`` | the last two parts of ``methodName`` (``io.k8s.core.v1.pods.list``) |
| other ``objectRef`` fields | ``resourceName`` (``core/v1/namespaces/ns/pods/name``) |
| ``responseStatus.code`` | ``status.code`` (a gRPC code) as the HTTP status kube-apiserver answers |
| ``auditID``, ``requestReceivedTimestamp``, ``stageTimestamp`` | ``operation.id`` (else ``insertId``), ``timestamp`` |
| ``annotations`` | ``labels`` (``authorization.k8s.io/decision``...) |
| ``requestObject``, ``responseObject`` | ``protoPayload.request``, ``protoPayload.response`` |

Not in GKE's entries, so absent: ``requestURI``, ``user.uid``, ``user.extra``, ``impersonatedUser``
(GKE names it in ``authenticationInfo.serviceAccountDelegationInfo``, not mapped), ``level``.
"""

from __future__ import annotations

from typing import Any

# google.rpc.Code -> the HTTP status kube-apiserver answered
HTTP_STATUS = {
    0: 200,
    1: 499,
    2: 500,
    3: 400,
    4: 504,
    5: 404,
    6: 409,
    7: 403,
    8: 429,
    9: 400,
    10: 409,
    11: 400,
    12: 501,
    13: 500,
    14: 503,
    15: 500,
    16: 401,
}
AUDIT_LOG = "type.googleapis.com/google.cloud.audit.AuditLog"
# Audit Event fields that GKE's entries do not carry, or carry only in part (the table above).
ABSENT = "is not in GKE's audit entries: always empty"
NOT_LOGGED = {
    "requestURI": ABSENT,
    "user.uid": ABSENT,
    "user.extra": ABSENT,
    "impersonatedUser": ABSENT + " (GKE names a delegation in authenticationInfo.serviceAccountDelegationInfo)",
    "level": ABSENT,
    "user.groups": "is not in GKE's audit entries: system:unauthenticated for system:anonymous, else empty",
}


def is_gke_entry(value: Any) -> bool:
    payload = value.get("protoPayload") if isinstance(value, dict) else None
    return isinstance(payload, dict) and payload.get("@type") == AUDIT_LOG


def audit_event(entry: dict[str, Any]) -> dict[str, Any]:
    """The audit Event a GKE audit log entry records."""
    payload = entry["protoPayload"]
    auth = payload.get("authenticationInfo") or {}
    meta = payload.get("requestMetadata") or {}
    username = auth.get("principalEmail", "")
    parts = str(payload.get("methodName", "")).split(".")
    event: dict[str, Any] = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "stage": "ResponseComplete",
        "auditID": (entry.get("operation") or {}).get("id") or entry.get("insertId", ""),
        "verb": parts[-1] if len(parts) > 1 else "",
        "user": {"username": username},
        "sourceIPs": [meta["callerIp"]] if meta.get("callerIp") else [],
        "userAgent": meta.get("callerSuppliedUserAgent", ""),
        "objectRef": _object_ref(str(payload.get("resourceName", "")), parts[-2] if len(parts) > 2 else ""),
        "requestReceivedTimestamp": entry.get("timestamp", ""),
        "stageTimestamp": entry.get("timestamp", ""),
        "annotations": entry.get("labels") or {},
    }
    if username == "system:anonymous":
        event["user"]["groups"] = ["system:unauthenticated"]
    status = payload.get("status")
    code = status.get("code", 0) if isinstance(status, dict) else 0
    event["responseStatus"] = {"metadata": {}, "code": HTTP_STATUS.get(code, 500)}
    if isinstance(status, dict) and status.get("message"):
        event["responseStatus"]["message"] = status["message"]
    for ours, theirs in (("requestObject", "request"), ("responseObject", "response")):
        if isinstance(payload.get(theirs), dict):
            event[ours] = payload[theirs]
    return event


def _object_ref(resource_name: str, resource: str) -> dict[str, str]:
    """``core/v1/namespaces/ns/pods/name/status`` -> objectRef (core is the empty API group)."""
    parts = resource_name.split("/")
    ref: dict[str, str] = {"resource": resource} if resource else {}
    if len(parts) < 2:
        return ref
    group, version, rest = parts[0], parts[1], parts[2:]
    ref["apiGroup"], ref["apiVersion"] = ("" if group == "core" else group), version
    if len(rest) >= 2 and rest[0] == "namespaces" and len(rest) > 2:
        ref["namespace"], rest = rest[1], rest[2:]
    if rest and not resource:
        ref["resource"] = rest[0]
    if len(rest) >= 2:
        ref["name"] = rest[1]
    if len(rest) >= 3:
        ref["subresource"] = rest[2]
    return {k: v for k, v in ref.items() if v or k == "apiGroup"}
