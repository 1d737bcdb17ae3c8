"""``auditwatch hunt --findings NS`` against the real control plane: the rows become DetectionFindings
(one per groupBy value, counts the rows' counts), labelled as a hunt with its range; hunting the same range
again leaves the same objects; another range makes others; the operator's own selector excludes them."""

import json
from collections import Counter

import orjson

from auditwatch.kube.client import own_findings
from corpus import generated_events, lines_of
from factory import SEED, auditwatch

NAMESPACE = "hunts"
DETECTION = "kubernetes-aws-detect-suspicious-kubectl-calls"


def findings(cluster, selector):
    out = cluster.kubectl("get", "detectionfindings", "-n", NAMESPACE, "-l", selector, "-o", "json").stdout
    return {f["metadata"]["name"]: f for f in json.loads(out)["items"]}


def test_hunt_findings_are_the_rows_grouped_and_the_same_when_hunted_again(cluster, tmp_path):
    cluster.kubectl("create", "namespace", NAMESPACE)
    log = tmp_path / "audit.log"
    log.write_bytes(lines_of(generated_events(31, 1500), 31))
    env = {"KUBECONFIG": str(cluster.admin_kubeconfig)}
    window = ("--since", "2026-11-05T00:00:00Z", "--until", "2026-11-25T00:00:00Z")

    code, out, err = auditwatch("hunt", "-d", SEED, *window, log)
    assert code == 0, err
    expected = Counter()
    for row in map(orjson.loads, out.splitlines()):
        expected[row["user"], row["src_ip"]] += row["count"]
    assert len(expected) > 3

    code, _, err = auditwatch("hunt", "-d", SEED, *window, "--findings", NAMESPACE, log, env=env)
    assert code == 0 and f"{len(expected)} created, 0 updated" in err, err
    hunt = err.split("auditwatch.io/hunt=")[1].split(")")[0]
    first = findings(cluster, f"auditwatch.io/hunt={hunt}")
    counted = {(f["spec"]["key"]["user"], f["spec"]["key"]["src_ip"]): f["status"]["count"] for f in first.values()}
    assert counted == dict(expected)
    some = next(iter(first.values()))
    assert some["metadata"]["labels"] == {"auditwatch.io/detection": DETECTION, "auditwatch.io/hunt": hunt}
    assert some["metadata"]["annotations"]["auditwatch.io/hunt-since"] == "2026-11-05T00:00:00.000000Z"
    assert some["spec"]["severity"] == "low" and some["spec"]["message"].startswith("Suspicious kubectl API calls")

    code, _, err = auditwatch("hunt", "-d", SEED, *window, "--findings", NAMESPACE, log, env=env)
    assert code == 0 and f"0 created, {len(expected)} updated" in err, err
    again = findings(cluster, f"auditwatch.io/hunt={hunt}")

    def counted_part(status):  # the same but for when it was written
        return {k: v for k, v in status.items() if k != "writtenAt"}

    assert {n: counted_part(f["status"]) for n, f in again.items()} == {
        n: counted_part(f["status"]) for n, f in first.items()
    }
    assert all(f["status"]["writtenAt"] >= first[n]["status"]["writtenAt"] for n, f in again.items())

    code, _, err = auditwatch(
        "hunt", "-d", SEED, "--since", "2026-11-05T00:00:00Z", "--findings", NAMESPACE, log, env=env
    )
    assert code == 0 and "0 updated" in err, err
    assert set(findings(cluster, "auditwatch.io/hunt")) > set(first)  # another range: other objects
    assert findings(cluster, own_findings(DETECTION)) == {}  # none is the operator's to count into


def test_hunt_findings_name_what_the_cluster_refuses(cluster, tmp_path):
    log = tmp_path / "audit.log"
    log.write_bytes(lines_of(generated_events(32, 300), 32))
    env = {"KUBECONFIG": str(cluster.admin_kubeconfig)}
    code, _, err = auditwatch("hunt", "-d", SEED, "--findings", "no-such-namespace", log, env=env)
    assert code == 2 and "--findings no-such-namespace: " in err and "404" in err, err
