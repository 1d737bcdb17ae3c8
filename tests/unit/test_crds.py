"""crds/ is generated from the API models and structural; a test fails when it drifts."""

from pathlib import Path

import yaml

from auditwatch.api.crds import crds, render

CRDS = Path(__file__).resolve().parents[2] / "crds"


def test_committed_crds_match_the_models():
    for name, crd in crds().items():
        assert (CRDS / name).read_text() == render(crd), f"crds/{name} is stale: run `auditwatch crds`"


def _walk(schema, path="$"):
    yield path, schema
    for key, sub in schema.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{key}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from _walk(schema[key], f"{path}[{key}]")


def test_schemas_are_structural_and_bounded():
    for name in crds():
        crd = yaml.safe_load((CRDS / name).read_text())
        root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in _walk(root):
            assert not {"$ref", "anyOf", "allOf", "oneOf", "const", "title"} & set(node), path
            assert node.get("additionalProperties") is not False, path
            assert "type" in node, path
            if node["type"] == "string" and "enum" not in node and path not in ("$.apiVersion", "$.kind"):
                assert "maxLength" in node, f"{name}: {path} has no maxLength"
            if node["type"] == "array":
                assert "maxItems" in node, f"{name}: {path} has no maxItems"
            if node["type"] == "object" and "additionalProperties" in node:
                assert "maxProperties" in node, f"{name}: {path} has no maxProperties"


def test_findings_answer_who_from_where_how_many_since_when():
    crd = yaml.safe_load((CRDS / "auditwatch.io_detectionfindings.yaml").read_text())
    assert "findings" in crd["spec"]["names"]["shortNames"]
    columns = {c["name"]: c["jsonPath"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert columns["User"] == ".spec.key.user" and columns["Source IP"] == ".spec.key.src_ip"
    assert columns["Count"] == ".status.count" and columns["First Seen"] == ".status.firstSeen"


def test_sources_need_exactly_one_kind_by_cel():
    crd = yaml.safe_load((CRDS / "auditwatch.io_auditdetections.yaml").read_text())
    source = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["sources"]
    rules = source["items"]["x-kubernetes-validations"]
    assert "has(self.file)" in rules[0]["rule"] and "== 1" in rules[0]["rule"]
