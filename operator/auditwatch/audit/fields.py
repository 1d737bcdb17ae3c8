"""The catalog of audit Event fields (audit.k8s.io/v1), flattened as detections name them.

Names are Splunk's flattening: ``.`` between keys, ``{}`` after an array. Objects below ``FREE_FORM``
prefixes have no fixed schema (request and response bodies, annotations, user extras). Lint
suggests the closest known name for an unknown one; a rule language's field mapping targets these.
"""

from __future__ import annotations

EVENT_FIELDS: dict[str, str] = {
    "kind": "Event",
    "apiVersion": "audit.k8s.io/v1",
    "level": "the audit level the policy chose: Metadata, Request, RequestResponse",
    "auditID": "unique per request, shared by the request's stages",
    "stage": "RequestReceived, ResponseStarted, ResponseComplete or Panic",
    "requestURI": "the request's path and query, as sent",
    "verb": "get, list, watch, create, update, patch, delete, deletecollection (or the HTTP verb)",
    "userAgent": "the client's User-Agent header",
    "sourceIPs{}": "the client's address, then the X-Forwarded-For chain",
    "requestReceivedTimestamp": "when the API server received the request (RFC 3339, microseconds)",
    "stageTimestamp": "when the request reached this stage",
    "user.username": "who made the request (system:anonymous when unauthenticated)",
    "user.uid": "the user's uid, where the authenticator sets one (never for system:anonymous)",
    "user.groups{}": "the user's groups (system:unauthenticated for anonymous requests)",
    "impersonatedUser.username": "the user impersonated, when the request impersonates",
    "impersonatedUser.uid": "the impersonated user's uid",
    "impersonatedUser.groups{}": "the impersonated user's groups",
    "objectRef.resource": "the resource asked for (pods, secrets...)",
    "objectRef.namespace": "its namespace",
    "objectRef.name": "its name",
    "objectRef.uid": "its uid",
    "objectRef.apiGroup": "its API group ('' for the core group)",
    "objectRef.apiVersion": "its API version",
    "objectRef.resourceVersion": "its resourceVersion",
    "objectRef.subresource": "the subresource (status, exec, log...)",
    "responseStatus.code": "the HTTP status code of the answer",
    "responseStatus.status": "Success or Failure",
    "responseStatus.message": "the answer's message",
    "responseStatus.reason": "the answer's reason (Forbidden, NotFound...)",
    "responseStatus.details.name": "the object the answer is about",
    "responseStatus.details.group": "its group",
    "responseStatus.details.kind": "its kind",
    "responseStatus.details.uid": "its uid",
    "responseStatus.details.causes{}.message": "why, per cause",
    "responseStatus.details.causes{}.reason": "the cause's reason",
    "responseStatus.details.causes{}.field": "the field the cause is about",
    "responseStatus.details.retryAfterSeconds": "when to retry, for 429 and 5xx answers",
}
FREE_FORM = ("requestObject.", "responseObject.", "annotations.", "user.extra.", "impersonatedUser.extra.")
