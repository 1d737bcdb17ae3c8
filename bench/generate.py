"""Generate a realistic kube-apiserver audit log (JSON lines): mostly controllers, kubelets and users,
with a share of anonymous, unauthenticated requests. Deterministic for a given seed.

    python bench/generate.py --events 300000 --anonymous 0.02 -o /tmp/audit.log
"""

from __future__ import annotations

import argparse
import json
import random
import uuid
from datetime import UTC, datetime, timedelta

USERS = [
    (
        "system:serviceaccount:kube-system:replicaset-controller",
        ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"],
    ),
    ("system:node:ip-10-0-1-23.ec2.internal", ["system:nodes", "system:authenticated"]),
    ("system:kube-scheduler", ["system:authenticated"]),
    ("system:kube-controller-manager", ["system:authenticated"]),
    ("alice@example.com", ["developers", "system:authenticated"]),
    ("arn:aws:iam::123456789012:role/ci-deployer", ["system:masters", "system:authenticated"]),
]
RESOURCES = ["pods", "configmaps", "secrets", "leases", "endpoints", "deployments", "nodes", "events"]
VERBS = ["get", "list", "watch", "update", "patch", "create"]
AGENTS = [
    "kube-controller-manager/v1.36.3 (linux/amd64) kubernetes/abc1234/"
    "system:serviceaccount:kube-system:replicaset-controller",
    "kubelet/v1.36.3 (linux/amd64) kubernetes/abc1234",
    "kubectl/v1.36.3 (darwin/arm64) kubernetes/abc1234",
    "kube-scheduler/v1.36.3 (linux/amd64) kubernetes/abc1234/leader-election",
]
REASON = 'RBAC: allowed by ClusterRoleBinding "system:controller:replicaset-controller"'
ANON_URIS = [
    "/version",
    "/api/v1/namespaces/kube-system/secrets",
    "/apis",
    "/api/v1/pods",
    "/healthz",
    "/.env",
]


def make_event(rnd: random.Random, t: datetime, anonymous: bool) -> dict:
    ts = t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    stage = rnd.choice(["ResponseComplete", "ResponseComplete", "RequestReceived"])
    if anonymous:
        user = {"username": "system:anonymous", "groups": ["system:unauthenticated"]}
        uri, verb = rnd.choice(ANON_URIS), "get"
        ref = (
            None
            if uri in ("/version", "/apis", "/healthz", "/.env")
            else {"resource": uri.rsplit("/", 1)[-1], "apiVersion": "v1"}
        )
        agent, code = (
            rnd.choice(["curl/8.5.0", "python-requests/2.32", "Go-http-client/1.1"]),
            rnd.choice([200, 403, 403, 404]),
        )
        ips = [f"203.0.113.{rnd.randint(1, 254)}"]
    else:
        name, groups = rnd.choice(USERS)
        user = {"username": name, "uid": str(uuid.UUID(int=rnd.getrandbits(128))), "groups": groups}
        res, verb = rnd.choice(RESOURCES), rnd.choice(VERBS)
        ns = rnd.choice(["kube-system", "default", "payments", "monitoring"])
        obj = f"{res[:-1]}-{rnd.randint(1, 5000)}"
        uri = (
            f"/api/v1/namespaces/{ns}/{res}/{obj}"
            if verb != "list"
            else f"/api/v1/namespaces/{ns}/{res}?limit=500&resourceVersion=0"
        )
        ref = {"resource": res, "namespace": ns, "name": obj, "apiVersion": "v1"}
        agent, code = rnd.choice(AGENTS), rnd.choice([200, 200, 200, 201, 404, 409])
        ips = [f"10.0.{rnd.randint(0, 3)}.{rnd.randint(1, 254)}"]
    ev = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": str(uuid.UUID(int=rnd.getrandbits(128))),
        "stage": stage,
        "requestURI": uri,
        "verb": verb,
        "user": user,
        "sourceIPs": ips,
        "userAgent": agent,
    }
    if ref:
        ev["objectRef"] = ref
    if stage != "RequestReceived":
        ev["responseStatus"] = {"metadata": {}, "code": code}
    ev["requestReceivedTimestamp"] = ts
    ev["stageTimestamp"] = (t + timedelta(milliseconds=rnd.randint(1, 40))).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    ev["annotations"] = {
        "authorization.k8s.io/decision": "allow" if code != 403 else "forbid",
        "authorization.k8s.io/reason": REASON,
    }
    return ev


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--anonymous", type=float, default=0.02, help="share of anonymous requests (0.02)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    t = datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC)
    with open(args.output, "w") as out:
        for _ in range(args.events):
            t += timedelta(microseconds=rnd.randint(100, 20_000))
            out.write(json.dumps(make_event(rnd, t, rnd.random() < args.anonymous), separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
