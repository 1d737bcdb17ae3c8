"""Bad audit input is counted and skipped, and the stream goes on: each case is followed by a good
anonymous request, which must still be counted."""

import json

import pytest
import yaml

from auditwatch.engine.evaluate import Evaluator
from auditwatch.engine.pipeline import Table
from auditwatch.spl import plan_search
from factory import SEED, event, line

GOOD = line(event(ips=["192.0.2.1"]))
ANON = '"user":{"username":"system:anonymous","groups":["system:unauthenticated"]}'
# (what, line, events decoded from it, malformed lines among what the prefilter let through)
CASES = [
    ("truncated JSON", b'{"kind":"Event",' + ANON.encode(), 0, 1),
    ("binary garbage", bytes(range(256)).replace(b"\n", b"") + b"system:unauthenticated", 0, 1),
    ("a 10 MB line", b'{"kind":"Event",' + ANON.encode() + b',"x":"' + b"a" * (10 << 20) + b'"}', 1, 0),
    ("invalid UTF-8", b'{"kind":"Event",' + ANON.replace("anonymous", "anonymous\xff").encode("latin-1") + b"}", 0, 1),
    ("a BOM", b"\xef\xbb\xbf" + line(event()).rstrip(b"\n"), 0, 1),
    ("nesting 10,000 deep", b'{"a":' * 10_000 + b'"system:unauthenticated"' + b"}" * 10_000, 0, 1),
    ("sourceIPs a string", json.dumps({**event(), "sourceIPs": "10.0.0.1"}).encode(), 1, 0),
    ("user a list", json.dumps({**event(), "user": ["system:anonymous", "system:unauthenticated"]}).encode(), 1, 0),
    ("numbers for strings", json.dumps({**event(), "user": {"username": 5, "groups": ["system:unauthenticated"]},
                                         "requestReceivedTimestamp": 12345}).encode(), 1, 0),
    ("a huge array", json.dumps({**event(), "user": {"username": "system:anonymous", "groups": [
        "system:unauthenticated"] + [str(i) for i in range(100_000)]}}).encode(), 1, 0),
    ("items that are not events", json.dumps({"kind": "EventList", "items": [1, "system:unauthenticated"]}).encode(),
     0, 1),
]  # fmt: skip


@pytest.mark.parametrize(("what", "bad", "decoded", "malformed"), CASES, ids=[c[0] for c in CASES])
def test_counted_skipped_and_the_stream_goes_on(what, bad, decoded, malformed):
    spec = yaml.safe_load(SEED.read_text())["spec"]
    evaluator = Evaluator(plan_search(spec["search"], spec.get("macros")))
    table = Table(evaluator.pipeline)
    for _, _, record in evaluator.records(bad + b"\n" + GOOD):
        table.add(record)
    c = evaluator.counters
    assert (c.lines, c.events, c.malformed) == (2, 1 + decoded, malformed), what
    assert any(row["src_ip"] == "192.0.2.1" for row in table.rows()), "the good line after it is counted"
