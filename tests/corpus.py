"""Generated audit events that cover Splunk's semantics, for comparing engines row for row: multivalue
fields, mixed case, JSON escapes, missing fields, numbers as text, unicode, EventList batches, a batch
with an item that is no object, malformed lines."""

import json
import random
from pathlib import Path

import pytest
import yaml
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from auditwatch.offline.scan import scan
from auditwatch.rules.language import rule_plan
from factory import SEED

ROOT = Path(__file__).resolve().parents[1]
# The seed and the shipped ESCU detections: every one must give the same rows on every engine.
SHIPPED = [
    SEED,
    *(
        p
        for pack in ("escu", "sigma", "falco")
        for p in sorted((ROOT / "manifests/detections" / pack).glob("*.yaml"))
        if p.name != "kustomization.yaml"
    ),
]

USERS = ["system:anonymous", "System:Anonymous", "alice", "bob", "émile", "system:serviceaccount:kube-system:x"]
GROUPS = ["system:unauthenticated", "SYSTEM:UNAUTHENTICATED", "system:authenticated", "dev", "system:masters"]
IPS = ["203.0.113.7", "203.0.113.9", "198.51.100.4", "10.1.2.3", "2001:db8::1", "not-an-ip"]
AGENTS = ["kubectl/v1.36.3 (linux/amd64)", "curl/8.0", "python-requests/2.31", "Mozilla/5.0 zgrab/0.x", ""]
VERBS = ["get", "list", "create", "GET", "Create", "delete", "patch", "watch", "update"]
RESOURCES = ["pods", "secrets", "cronjobs", "daemonsets", "services", "configmaps", "nodes"]
IMAGES = ["nginx:1.25", "docker.io/library/busybox:latest", "ghcr.io/evil/miner:1", "registry.k8s.io/pause:3.9"]


def generated_events(seed: int, n: int) -> list[dict]:
    rng = random.Random(seed)
    pick = rng.choice
    events = []
    for i in range(n):
        ev: dict = {
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": "RequestResponse",
            "auditID": f"id-{seed}-{i}",
            "stage": pick(["ResponseComplete", "ResponseStarted"]),
            "verb": pick(VERBS),
            "requestURI": pick(
                [
                    "/api/v1/pods",
                    "/api/v1/namespaces/prod/secrets/db",
                    "/apis/batch/v1/cronjobs?limit=500&x=1",
                    "/healthz",
                ]
            ),
        }
        user: dict = {"username": pick(USERS)}
        if rng.random() < 0.8:
            groups = rng.sample(GROUPS, rng.randint(0, 3))
            user["groups"] = groups if rng.random() < 0.9 else (groups[0] if groups else "dev")  # a string at times
        if rng.random() < 0.3:
            user["uid"] = f"u{rng.randint(1, 5)}"
        ev["user"] = user
        if rng.random() < 0.95:
            ips = rng.sample(IPS, rng.randint(1, 2))
            ev["sourceIPs"] = ips if rng.random() < 0.9 else ips[0]
        if rng.random() < 0.9:
            ev["userAgent"] = pick(AGENTS)
        if rng.random() < 0.9:
            code = pick([200, 201, 401, 403, 404, 409])
            ev["responseStatus"] = {"code": code if rng.random() < 0.85 else str(code)}
        if rng.random() < 0.9:
            ref = {
                "resource": pick(RESOURCES),
                "namespace": pick(["default", "kube-system", "prod"]),
                "name": pick(["db", "web", "Web", "x", "ünï"]),
            }
            ev["objectRef"] = ref
            if ref["resource"] == "pods" and rng.random() < 0.6:
                containers = [
                    {"name": "c", "image": pick(IMAGES), "securityContext": {"privileged": pick([True, False, "true"])}}
                    for _ in range(rng.randint(1, 2))
                ]
                ev["requestObject"] = {
                    "kind": "Pod",
                    "spec": {"containers": containers, "hostNetwork": pick([True, False])},
                }
            elif ref["resource"] == "services" and rng.random() < 0.6:
                ev["requestObject"] = {"kind": "Service", "spec": {"type": pick(["NodePort", "ClusterIP"])}}
        day, hour, minute, micros = rng.randint(1, 28), rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 999999)
        stamp = f"2026-11-{day:02d}T{hour:02d}:{minute:02d}:00.{micros:06d}Z"
        if rng.random() < 0.9:
            ev["requestReceivedTimestamp"] = stamp
        ev["stageTimestamp"] = stamp if rng.random() < 0.9 else 17
        if rng.random() < 0.1:
            ev["annotations"] = {"authorization.k8s.io/decision": pick(["allow", "forbid"]), "n": rng.random()}
        _sigma_and_falco_parts(ev, random.Random(seed * 100_003 + i))  # its own draws: the rest stays as it was
        events.append(ev)
    return events


def _sigma_and_falco_parts(ev: dict, rng: random.Random) -> None:
    """What the Sigma and Falco packs read: API groups, subresources, request bodies of roles, bindings,
    configmaps and pods (host paths, capabilities, sidecars), authorization annotations, ingresses."""
    pick = rng.choice
    ref = ev.get("objectRef")
    if ref is None:
        return
    if rng.random() < 0.5:
        ref["apiGroup"] = pick(["", "apps", "batch", "rbac.authorization.k8s.io", "authorization.k8s.io"])
    if rng.random() < 0.2:
        ref["subresource"] = pick(["exec", "attach", "portforward", "ephemeralcontainers", "log"])
    if rng.random() < 0.3:
        ref["resource"] = pick(["clusterroles", "roles", "clusterrolebindings", "rolebindings", "namespaces",
                                "serviceaccounts", "ingresses", "deployments", "selfsubjectrulesreviews"])  # fmt: skip
    resource = ref["resource"]
    body: dict | None = None
    if resource in ("clusterroles", "roles"):
        body = {"rules": [{"apiGroups": [pick(["", "*"])], "resources": rng.sample(["pods", "pods/exec", "*"], 2),
                           "verbs": rng.sample(["get", "create", "delete", "*"], 2)}]}  # fmt: skip
    elif resource in ("clusterrolebindings", "rolebindings"):
        body = {"roleRef": {"name": pick(["cluster-admin", "view"])}, "subjects": [{"kind": "User", "name": "bob"}]}
    elif resource == "configmaps":
        body = {"data": {pick(["password", "color", "aws_access_key_id"]): pick(["x", "1"])}}
    elif resource == "ingresses":
        body = {"spec": {"tls": [{"hosts": ["a"]}]}} if rng.random() < 0.5 else {"spec": {"rules": []}}
    elif resource == "pods" and "requestObject" in ev:
        spec = ev["requestObject"]["spec"]
        if rng.random() < 0.5:
            spec["volumes"] = [
                {"name": "v", "hostPath": {"path": pick(["/etc", "/proc", "/data", "/var/run/docker.sock"])}}
            ]
        if rng.random() < 0.3:
            spec["containers"][0].setdefault("securityContext", {})["capabilities"] = {"add": ["SYS_ADMIN"]}
        spec.update({k: True for k in rng.sample(["hostPID", "hostIPC"], rng.randint(0, 2))})
    if body is not None:
        ev["requestObject"] = body
    if rng.random() < 0.4:
        ev.setdefault("annotations", {})["authorization.k8s.io/decision"] = pick(["allow", "forbid"])
    if rng.random() < 0.05:
        ev["user"]["username"] = pick(["kubelet", "minikube", "admin"])


def lines_of(events: list[dict], seed: int) -> bytes:
    """Events as lines: some escaped to ASCII, some batched in an EventList, a few malformed lines."""
    rng = random.Random(seed)
    out, i = [], 0
    while i < len(events):
        ascii_only = rng.random() < 0.3
        if rng.random() < 0.1:
            batch = {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": events[i : i + 3]}
            out.append(json.dumps(batch, ensure_ascii=ascii_only))
            i += 3
        else:
            out.append(json.dumps(events[i], ensure_ascii=ascii_only, separators=(",", ":")))
            i += 1
        if rng.random() < 0.02:
            bad_batch = {"kind": "EventList", "items": [events[i - 1], 5]}  # one item no object: the line is none
            out.append(rng.choice(['{"verb": "get", "user": {', "garbage", "[1, 2]", "", '{"items": "no"}',
                                   json.dumps(bad_batch), " \t" + json.dumps(events[i - 1])]))  # fmt: skip
    return "\n".join(out).encode() + b"\n"


# Searches that use each rule of the semantics, every one giving rows over the corpus.
SEARCHES = [
    "verb=get | stats count BY user.username",
    "user.groups{}=system:unauth* | stats count values(sourceIPs{}) as ips dc(verb) as verbs BY user.username",
    'sourceIPs{}="203.0.113.0/24" NOT verb=list | stats count BY sourceIPs{} verb',
    "responseStatus.code>=400 responseStatus.code!=404"
    " | stats count min(responseStatus.code) as lo max(_time) BY objectRef.resource",
    "requestObject.spec.containers{}.securityContext.privileged=true"
    " | stats values(requestObject.spec.containers{}.image) as images BY objectRef.name",
    'requestURI="*limit=*" OR userAgent="*zgrab*" | stats count BY requestURI userAgent',
    "unauthenticated | stats count BY verb",
    "verb IN (get, LIST, *ate) | fillnull | stats count BY user.uid verb | where count > 3",
    "verb=* | rename user.username as who | stats count BY who | search who=system*",
    "annotations.authorization.k8s.io/decision=forbid"
    " | stats count BY annotations.authorization.k8s.io/decision annotations.n",
    "verb=create | stats min(stageTimestamp) as first max(stageTimestamp) as last count BY objectRef.namespace"
    " | convert ctime(first)",
    "verb=get | iplocation sourceIPs{} | stats count BY Country City",
    'objectRef.name=web | where verb = "get" OR verb = "GET" | stats count BY verb',
    "verb=get user.username=alice",
    "user.groups{}!=dev | stats count(sourceIPs{}) as n BY stage",
    "* | stats count",  # no field read at all
]


def geoip_database(path: Path) -> str:
    """A MaxMind-format City database (IPv6 with IPv4 inside) with two networks of the corpus."""
    writer = MMDBWriter(ip_version=6, database_type="GeoLite2-City", ipv4_compatible=True)
    for net, city, country in (("203.0.113.0/24", "Paris", "France"), ("198.51.100.0/24", "Ashburn", "United States")):
        location = {"latitude": 1.5, "longitude": 2.5}
        writer.insert_network(IPSet([net]), {"city": {"names": {"en": city}}, "country": {"names": {"en": country}},
                                             "location": location})  # fmt: skip
    writer.to_db_file(str(path))
    return str(path)


def streaming(plan, path: str, geoip: str | None = None) -> list:
    """The rows the streaming engine gives (``scan``, one reader): what every other engine must give."""
    rows: list = []
    scan(plan, [path], rows.append, lambda r: r, geoip_db=geoip, jobs=1)
    return rows


def detection_plan(path):
    return rule_plan(yaml.safe_load(Path(path).read_text())["spec"]).plan


# Fixtures of the engines' tests (imported by their modules): the corpus as a log, and a GeoIP database.
@pytest.fixture(scope="session", name="corpus")
def corpus_log(tmp_path_factory):
    """1,500 generated events (tests/corpus.py) as an audit log, for comparing engines row for row."""
    path = tmp_path_factory.mktemp("corpus") / "audit.log"
    path.write_bytes(lines_of(generated_events(1, 1500), 1))
    return str(path)


@pytest.fixture(scope="session", name="geoip")
def geoip_file(tmp_path_factory):
    return geoip_database(tmp_path_factory.mktemp("geo") / "city.mmdb")
