"""``auditwatch scan`` end to end in a subprocess: formats, inputs, summary and exit codes."""

import gzip
import json
import subprocess
import sys

import pytest

from factory import SEED, auditwatch, event, line


def scan(*args, stdin=b"", env=None):
    return auditwatch("scan", *args, stdin=stdin, env=env)


@pytest.fixture
def log(tmp_path):
    path = tmp_path / "audit.log"
    path.write_bytes(
        line(event(uri="/version", verb="get", code=200))
        + b"garbage\n"
        + line(event(username="alice", groups=["system:authenticated"]))
        + line(event(ips=["10.0.0.1"]))
    )
    return path


def test_jsonl_rows_and_summary(log):
    code, out, err = scan("--detection", SEED, log)
    assert code == 0
    rows = [json.loads(x) for x in out.splitlines()]
    assert [(r["requestURI"], r["src_ip"], r["count"]) for r in rows] == [
        ("/api/v1/namespaces/default/pods", "10.0.0.1", 1),
        ("/version", "203.0.113.7", 1),
    ]
    assert "4 lines read (2 skipped unparsed by the prefilter), 2 events decoded, 2 matched" in err
    assert "2 rows in" in err


def test_without_the_c_extension_the_rows_and_counts_are_the_same(log):
    native = scan("--detection", SEED, log)
    python = scan("--detection", SEED, log, env={"AUDITWATCH_NATIVE": "0"})
    assert python[:2] == native[:2] and len(native[1].splitlines()) == 2
    counts = [err.splitlines()[0].split(" rows in ")[0] for err in (python[2], native[2])]  # not the timings
    assert counts[0] == counts[1] and "2 skipped unparsed by the prefilter" in counts[0]


def test_iplocation_without_a_database_names_the_option(tmp_path, log):
    geo = tmp_path / "geo.yaml"
    geo.write_text("kind: AuditDetection\nspec:\n  search: 'verb=get | iplocation sourceIPs{} | stats count BY City'\n")
    code, out, err = scan("-d", geo, log, env={"AUDITWATCH_GEOIP_DB": ""})
    assert code == 2 and out == ""
    assert err.startswith(f"auditwatch: {geo}: spec.search: iplocation needs a MaxMind-format database")


def test_no_prefilter_sees_and_reports_the_malformed_line(log):
    code, out, err = scan("--detection", SEED, "--no-prefilter", log)
    assert code == 0 and len(out.splitlines()) == 2
    assert "1 malformed lines skipped" in err and f"malformed: {log}:2: invalid JSON" in err


def test_table_output(log):
    _, out, _ = scan("-d", SEED, "-o", "table", log)
    header, *rows = out.splitlines()
    assert header.split() == [
        "objectRef.name",
        "objectRef.namespace",
        "objectRef.resource",
        "requestReceivedTimestamp",
        "requestURI",
        "responseStatus.code",
        "src_ip",
        "stage",
        "user.groups{}",
        "user.uid",
        "user",
        "userAgent",
        "verb",
        "count",
    ]
    assert len(rows) == 2 and rows[1].split()[4] == "/version"


def test_gzip_and_stdin(log, tmp_path):
    gz = tmp_path / "audit.log.gz"
    gz.write_bytes(gzip.compress(log.read_bytes()))
    expected = scan("-d", SEED, log)[1]
    assert scan("-d", SEED, gz)[1] == expected
    assert scan("-d", SEED, "-", stdin=log.read_bytes())[1] == expected


def test_invalid_detection_exits_2_with_the_position(tmp_path, log):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: auditwatch.io/v1alpha1\nkind: AuditDetection\nmetadata: {name: x}\n"
        "spec:\n  search: 'a=1 | stats count BY'\n"
    )
    code, out, err = scan("-d", bad, log)
    assert code == 2 and out == ""
    assert (
        err.strip()
        == f"auditwatch: {bad}: spec.search: stats BY: expected a field name, got end of search at column 21"
    )


def test_invalid_manifest_field_is_named(tmp_path, log):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: auditwatch.io/v1alpha1\nkind: AuditDetection\nspec:\n  search: 5\n")
    code, _, err = scan("-d", bad, log)
    assert code == 2 and err.strip() == f"auditwatch: {bad}: spec.search: must be a non-empty string"


def test_unreadable_log_exits_2(tmp_path):
    code, _, err = scan("-d", SEED, tmp_path / "missing.log")
    assert code == 2 and "missing.log: cannot read: No such file or directory" in err


def test_a_closed_output_pipe_is_not_an_error(log):
    proc = subprocess.Popen([sys.executable, "-m", "auditwatch", "scan", "-d", str(SEED), str(log)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    proc.stdout.close()  # as `| head -0` does
    _, err = proc.communicate()
    assert proc.returncode == 0 and b"Traceback" not in err and b"cannot read" not in err


def test_a_truncated_gzip_is_named_and_the_other_files_are_still_scanned(log, tmp_path):
    cut = tmp_path / "cut.log.gz"
    cut.write_bytes(gzip.compress(log.read_bytes() * 50)[:-30])
    code, out, err = scan("-d", SEED, log, cut, log)
    assert code == 1
    assert f"{cut}: compressed input ends early or is corrupt" in err and "the other inputs are scanned" in err
    [row] = [json.loads(x) for x in out.splitlines() if json.loads(x).get("src_ip") == "10.0.0.1"]
    assert row["count"] == 2  # both whole copies of the log, none of the cut one


def test_scan_does_not_import_pydantic():
    """scan starts in 0.16 s without pydantic and the API models, 0.47 s with them (measured once)."""
    imports = "auditwatch.cli, auditwatch.offline.scan, auditwatch.offline.inputs"
    code = f"import sys, {imports}; auditwatch.cli.build_parser(); print('pydantic' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
