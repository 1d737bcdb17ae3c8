"""The SQL engine against the streaming one, row for row: every shipped detection and generated searches
over generated events that cover Splunk's semantics (multivalue, case, JSON escapes, missing fields,
numbers as text, unicode, EventList batches, malformed lines)."""

import gzip
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from auditwatch.engine.duckdb_engine import DuckDB
from auditwatch.offline.scan import scan
from auditwatch.spl import plan_search
from factory import SEED

ROOT = Path(__file__).resolve().parents[2]
DETECTIONS = sorted(p for p in (ROOT / "manifests/detections/escu").glob("*.yaml") if p.name != "kustomization.yaml")
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
        events.append(ev)
    return events


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


@pytest.fixture(scope="module")
def duck():
    return DuckDB(memory_limit="1GB", threads=2)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("hunt") / "audit.log"
    path.write_bytes(lines_of(generated_events(1, 1500), 1))
    return str(path)


@pytest.fixture(scope="module")
def geoip(tmp_path_factory):
    path = tmp_path_factory.mktemp("geo") / "city.mmdb"
    writer = MMDBWriter(ip_version=6, database_type="GeoLite2-City", ipv4_compatible=True)
    for net, city, country in (("203.0.113.0/24", "Paris", "France"), ("198.51.100.0/24", "Ashburn", "United States")):
        writer.insert_network(
            IPSet([net]),
            {
                "city": {"names": {"en": city}},
                "country": {"names": {"en": country}},
                "location": {"latitude": 1.5, "longitude": 2.5},
            },
        )
    writer.to_db_file(str(path))
    return str(path)


def streaming(plan, path, geoip=None):
    rows = []
    scan(plan, [path], rows.append, lambda r: r, geoip_db=geoip, jobs=1)
    return rows


def detection_plan(path):
    spec = yaml.safe_load(Path(path).read_text())["spec"]
    return plan_search(spec["search"], spec.get("macros"))


@pytest.mark.parametrize("path", [SEED, *DETECTIONS], ids=lambda p: Path(p).stem)
def test_every_shipped_detection_gives_the_streaming_rows(path, duck, corpus, geoip):
    plan = detection_plan(path)
    expected = streaming(plan, corpus, geoip)
    assert list(duck.rows(plan, [corpus], geoip)) == expected
    if Path(path) == Path(SEED):
        assert len(expected) > 10  # the corpus exercises the seed rule


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
]


@pytest.mark.parametrize("search", SEARCHES)
def test_searches_that_use_each_semantic_rule_give_the_streaming_rows(search, duck, corpus, geoip):
    plan = plan_search(search)
    expected = streaming(plan, corpus, geoip)
    assert expected, f"the corpus should give {search!r} rows"
    assert list(duck.rows(plan, [corpus], geoip)) == expected


FIELDS = [
    "verb",
    "user.username",
    "user.groups{}",
    "sourceIPs{}",
    "responseStatus.code",
    "objectRef.name",
    "requestObject.spec.containers{}.image",
    "userAgent",
    "stage",
]
VALUES = ["get", "GET", "system:*", "*anonymous", "403", "40*", "203.0.113.0/24", "web", "ünï", "*", "nginx*", "a*b"]
term = st.builds(
    lambda f, op, v: f'{f}{op}"{v}"',
    st.sampled_from(FIELDS),
    st.sampled_from(["=", "!=", ">", "<="]),
    st.sampled_from(VALUES),
)
expr = st.recursive(
    term,
    lambda inner: st.one_of(
        st.builds(lambda a, b: f"({a} OR {b})", inner, inner),
        st.builds(lambda a, b: f"{a} {b}", inner, inner),
        st.builds(lambda a: f"NOT {a}", inner),
    ),
    max_leaves=4,
)
stats = st.builds(
    lambda fn, f, by: f"| stats count {fn}({f}) as x BY {by}",
    st.sampled_from(["values", "dc", "min", "max", "count"]),
    st.sampled_from(FIELDS),
    st.sampled_from(FIELDS),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(expr, stats)
def test_generated_searches_give_the_streaming_rows(duck, corpus, where, aggregate):
    plan = plan_search(f"{where} {aggregate}")
    assert list(duck.rows(plan, [corpus])) == streaming(plan, corpus)


def test_gzip_and_several_files_read_as_scan_reads_them(duck, tmp_path):
    plan = detection_plan(SEED)
    plain, packed = tmp_path / "a.log", tmp_path / "b.log.gz"
    plain.write_bytes(lines_of(generated_events(2, 300), 2))
    packed.write_bytes(
        gzip.compress(lines_of(generated_events(3, 200), 3)) + gzip.compress(lines_of(generated_events(4, 100), 4))
    )
    rows = []
    scan(plan, [str(plain), str(packed)], rows.append, lambda r: r)
    assert list(duck.rows(plan, [str(plain), str(packed)])) == rows and rows


def command(name, *args):
    proc = subprocess.run([sys.executable, "-m", "auditwatch", name, *map(str, args)], capture_output=True, check=False)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def test_the_hunt_command_reads_directories_globs_and_documents_as_scan_does(tmp_path):
    """A directory, a glob and a pretty-printed JSON array (scan's decoding first): the rows of scan."""
    events = generated_events(5, 400)
    (tmp_path / "logs" / "old").mkdir(parents=True)
    (tmp_path / "logs" / "a.log").write_bytes(lines_of(events[:200], 5))
    (tmp_path / "logs" / "old" / "b.log.gz").write_bytes(gzip.compress(lines_of(events[200:300], 6)))
    (tmp_path / "export.json").write_text(json.dumps(events[300:], indent=2))
    inputs = [tmp_path / "logs", str(tmp_path / "export.*")]
    code, hunted, notes = command("hunt", "-d", SEED, *inputs)
    assert code == 0 and "rows from 3 files" in notes
    files = [tmp_path / "logs/a.log", tmp_path / "logs/old/b.log.gz", tmp_path / "export.json"]
    assert hunted == command("scan", "-d", SEED, *files)[1] != ""
    assert (
        command("hunt", "-d", SEED, "-o", "table", *inputs)[1] == command("scan", "-d", SEED, "-o", "table", *files)[1]
    )


def test_the_hunt_command_names_what_it_cannot_do(tmp_path):
    code, sql, _ = command("hunt", "-d", SEED, "--print-sql")
    assert code == 0 and sql.startswith("SELECT") and "ILIKE '%system:unauthenticated%'" in sql
    assert command("hunt", "-d", SEED, tmp_path / "nowhere")[0:3:2] == (
        2,
        f"auditwatch: {tmp_path / 'nowhere'}: no such file or directory\n",
    )
    bad = tmp_path / "geo.yaml"
    bad.write_text(yaml.safe_dump({"kind": "AuditDetection", "spec": {"search": "verb=get | iplocation sourceIPs{}"}}))
    (tmp_path / "a.log").write_bytes(lines_of(generated_events(6, 5), 6))
    code, _, err = command("hunt", "-d", bad, tmp_path / "a.log")
    assert code == 2 and err.startswith(f"auditwatch: {bad}: spec.search: iplocation needs a MaxMind-format database")
