"""The Sigma and Falco packs: import (golden), every rule on events that must and must not match, Falco's
file semantics (append, override, disable, exceptions) and operators, and errors that name the rule."""

import json
import os
from pathlib import Path

import pytest
import yaml

from auditwatch.engine.evaluate import Evaluator
from auditwatch.frontend import falco, sigma
from auditwatch.frontend.common import RuleError
from auditwatch.frontend.falco_rules import load_files
from auditwatch.rules.escu import render
from auditwatch.rules.language import rule_plan
from auditwatch.rules.packs import import_falco, import_sigma
from factory import auditwatch, event

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("AUDITWATCH_SHARED_DIR", ROOT.parent / "shared"))
SIGMA, FALCO = SHARED / "sigma", SHARED / "falco"
assert SIGMA.is_dir() and FALCO.is_dir(), f"Sigma and Falco reference files not found in {SHARED}"
MANIFESTS = ROOT / "manifests/detections"
SIGMA_LINK = (
    "https://github.com/SigmaHQ/sigma/blob/8eaafff1f2845a696050e05e72ba1140ee190698/rules/application/kubernetes/audit/"
)
FALCO_LINK = ("https://github.com/falcosecurity/plugins/blob/0b3cbd8d84eba83877159cf3c9fdae1820084c26/plugins/"
              "k8saudit/rules/k8s_audit_rules.yaml")  # fmt: skip


def test_the_committed_manifests_are_what_the_importers_write():
    sigma_files = sorted(SIGMA.glob("*.yml"))
    assert len(sigma_files) == 16
    written = {}
    for path in sigma_files:
        obj = import_sigma(path, SIGMA_LINK)
        written[f"sigma/{obj['metadata']['name']}.yaml"] = render(obj, path.name, "import-sigma")
    objects, skipped = import_falco([FALCO / "k8s_audit_rules.yaml"], FALCO_LINK)
    assert len(objects) == 48 and skipped == []  # every published rule imports
    for obj in objects:
        written[f"falco/{obj['metadata']['name']}.yaml"] = render(obj, "k8s_audit_rules.yaml", "import-falco")
    for name, text in written.items():
        assert (MANIFESTS / name).read_text() == text, f"{name} is stale: run import-sigma / import-falco"
    for pack in ("sigma", "falco"):
        listed = yaml.safe_load((MANIFESTS / pack / "kustomization.yaml").read_text())["resources"]
        assert sorted(f"{pack}/{n}" for n in listed) == sorted(n for n in written if n.startswith(pack))


def test_a_sigma_manifest_keeps_the_rule_its_author_and_link():
    obj = import_sigma(SIGMA / "kubernetes_audit_hostpath_mount.yml", SIGMA_LINK)
    assert obj["spec"]["sigma"] == (SIGMA / "kubernetes_audit_hostpath_mount.yml").read_text()
    notes = obj["metadata"]["annotations"]
    assert notes["sigmahq.io/author"] == "Leo Tsaousis (@laripping)"
    assert notes["sigmahq.io/link"] == SIGMA_LINK + "kubernetes_audit_hostpath_mount.yml"
    assert obj["metadata"]["labels"]["mitre-attack.sigmahq.io/t1611"] == "true"
    assert obj["spec"]["finding"]["severity"] == "low"


def runs(spec: dict, events: list[dict]) -> list[bool]:
    """For each event, whether the rule keeps it (the streaming engine, as the operator runs it)."""
    plan = rule_plan(spec).plan
    return [bool(list(Evaluator(plan).records(json.dumps(e).encode() + b"\n", origin="t"))) for e in events]


def sigma_spec(name: str) -> dict:
    return {"sigma": (SIGMA / f"kubernetes_audit_{name}.yml").read_text()}


def req(verb, resource, *, ns="prod", name="x", sub=None, group=None, body=None, code=201, **kw):
    ref = {"resource": resource, "namespace": ns, "name": name}
    if sub:
        ref["subresource"] = sub
    if group:
        ref["apiGroup"] = group
    extra = {"requestObject": body} if body is not None else {}
    return event(
        verb=verb, username=kw.pop("username", "bob"), groups=["dev"], object_ref=ref, code=code, **extra, **kw
    )


POD = {"kind": "Pod", "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}
HOSTPATH_POD = {"kind": "Pod", "spec": {"containers": [{"name": "c", "image": "nginx"}],
                                        "volumes": [{"name": "h", "hostPath": {"path": "/etc"}}]}}  # fmt: skip
CAPS_POD = {"kind": "Pod", "spec": {"containers": [{"name": "c", "image": "x",
                                                    "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]}}  # fmt: skip
# Sigma rule -> (events that must match, events that must not)
SIGMA_CASES = {
    "change_admission_controller": (
        [req("create", "mutatingwebhookconfigurations", group="admissionregistration.k8s.io")],
        [req("get", "mutatingwebhookconfigurations", group="admissionregistration.k8s.io"),
         req("create", "mutatingwebhookconfigurations", group="apps")],
    ),
    "cronjob_modification": ([req("patch", "cronjobs", group="batch")], [req("list", "jobs", group="batch")]),
    "deployment_deleted": ([req("delete", "deployments")], [req("delete", "pods")]),
    "events_deleted": ([req("delete", "events")], [req("create", "events")]),
    "exec_into_container": ([req("create", "pods", sub="exec")], [req("create", "pods", sub="log"), req("create", "pods")]),
    "hostpath_mount": ([req("create", "pods", body=HOSTPATH_POD)], [req("create", "pods", body=POD)]),
    "pod_in_system_namespace": ([req("create", "pods", ns="kube-system")], [req("create", "pods", ns="default")]),
    # published with responseStatus.code: 'ALLOW', which no event has (lint says never-matches)
    "potential_enumeration_activity": (
        [],
        [req("create", "pods", sub="exec", uri="/api/v1/namespaces/p/pods/x/exec?command=%2fbin%2fbash", code=200)],
    ),
    "privileged_pod_creation": ([req("create", "pods", body=CAPS_POD)], [req("create", "pods", body=POD)]),
    "rbac_permisions_listing": (
        [req("create", "selfsubjectrulesreviews", group="authorization.k8s.io")],
        [req("create", "selfsubjectaccessreviews", group="authorization.k8s.io")],
    ),
    "rolebinding_modification": (
        [req("update", "clusterrolebindings", group="rbac.authorization.k8s.io")],
        [req("get", "rolebindings", group="rbac.authorization.k8s.io")],
    ),
    "secrets_enumeration": ([req("list", "secrets")], [req("get", "secrets")]),
    "secrets_modified_or_deleted": ([req("delete", "secrets")], [req("watch", "secrets")]),
    "serviceaccount_creation": ([req("create", "serviceaccounts")], [req("delete", "serviceaccounts")]),
    "sidecar_injection": ([req("patch", "deployments", group="apps")], [req("patch", "deployments", group="extensions")]),
    "unauthorized_unauthenticated_actions": ([req("get", "pods", code=401), req("get", "pods", code=403)],
                                             [req("get", "pods", code=404)]),
}  # fmt: skip


def test_every_sigma_rule_has_cases():
    assert {p.stem.removeprefix("kubernetes_audit_") for p in SIGMA.glob("*.yml")} == set(SIGMA_CASES)


@pytest.mark.parametrize("name", sorted(SIGMA_CASES))
def test_each_sigma_rule_on_events_that_must_and_must_not_match(name):
    good, bad = SIGMA_CASES[name]
    assert runs(sigma_spec(name), good) == [True] * len(good)
    assert runs(sigma_spec(name), bad) == [False] * len(bad)


def test_sigma_modifiers_and_conditions():
    def rule(detection: str) -> dict:
        return {"sigma": "title: t\nlogsource: {product: kubernetes, service: audit}\ndetection:\n" + detection}

    ev = req("get", "pods", name="Web-1", uri="/api/v1/pods?watch=1", ips=["10.1.2.3"])
    cases = {
        "  s: {objectRef.name|startswith: web}\n  condition: s": True,  # case-insensitive
        "  s: {objectRef.name|cased|startswith: web}\n  condition: s": False,
        "  s: {objectRef.name: 'W?b-*'}\n  condition: s": True,
        "  s: {objectRef.name|re: '^W[a-z]+-\\d$'}\n  condition: s": True,
        "  s: {objectRef.name|re|i: '^web'}\n  condition: s": True,
        "  s: {sourceIPs|cidr: 10.0.0.0/8}\n  condition: s": True,
        "  s: {objectRef.uid|exists: true}\n  condition: s": False,
        "  s: {objectRef.name|contains|all: [eb, '-1']}\n  condition: s": True,
        "  s: {objectRef.name|contains|all: [eb, '-2']}\n  condition: s": False,
        "  a: {verb: get}\n  b: {verb: list}\n  condition: 1 of a* and not b": True,
        "  a: {verb: get}\n  b: {objectRef.name|endswith: '-1'}\n  condition: all of them": True,
        "  s: {responseStatus.code|gte: 400}\n  condition: s": False,  # 201
        "  s: {responseStatus.code|lt: 300}\n  condition: s": True,
        "  k: [watch=1]\n  condition: k": True,  # a keyword: anywhere in the event
    }
    assert {d: runs(rule(d), [ev])[0] for d in cases} == cases


def test_sigma_rules_it_cannot_run_are_refused_by_name():
    with pytest.raises(RuleError, match=r"logsource product 'windows'.*only Kubernetes audit rules"):
        sigma.translate("title: w\nlogsource: {product: windows}\ndetection: {s: {a: 1}, condition: s}\n")
    base = "title: b\nname: b\nlogsource: {product: kubernetes, service: audit}\ndetection: {s: {verb: get}, condition: s}\n"
    correlation = base + ("---\ntitle: c\ncorrelation: {type: event_count, rules: [b], group-by: [verb], timespan: 5m,"
                          " condition: {gte: 5}}\n")  # fmt: skip
    with pytest.raises(RuleError, match=r"correlation rule \(event_count\).*not run yet"):
        sigma.translate(correlation)


# -- Falco -----------------------------------------------------------------------------------------
def falco_specs(*extra: str) -> dict[str, dict]:
    """spec.falco of each enabled rule of the published file, with ``extra`` rules files loaded after it."""
    texts = [("k8s_audit_rules.yaml", (FALCO / "k8s_audit_rules.yaml").read_text())]
    ruleset = load_files(texts + [(f"override{i}.yaml", t) for i, t in enumerate(extra)])
    return {r.name: {"falco": vars(ruleset.falco_rule(r))} for r in ruleset.rules.values() if r.enabled}


def pod_body(*containers, volumes=(), **spec):
    return {"kind": "Pod", "spec": {"containers": list(containers), "volumes": list(volumes), **spec}}


def ctr(image="nginx:1.27", **security):
    return {"name": "c", "image": image, **({"securityContext": security} if security else {})}


def allowed(ev):  # as a webhook authorizer's annotations say it
    ev["annotations"] = {"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": "RBAC"}
    return ev


def k(verb, resource, *, user="bob", code=201, stage="ResponseComplete", **kw):
    return allowed(req(verb, resource, username=user, code=code, stage=stage, **kw))


ROLE = {"kind": "ClusterRole", "rules": [{"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]}]}
READ_ROLE = {"kind": "ClusterRole", "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}
WILD_ROLE = {"kind": "ClusterRole", "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["get"]}]}
FALCO_CASES = {
    "Disallowed K8s User": ([k("get", "pods", user="mallory")], [k("get", "pods", user="kubelet"),
                                                                 k("get", "pods", user="system:node:n1")]),
    "Create Privileged Pod": (
        [k("create", "pods", body=pod_body(ctr("evil:1", privileged=True)))],
        [k("create", "pods", body=pod_body(ctr(privileged=False))),
         k("create", "pods", body=pod_body(ctr("docker.io/calico/node:v3", privileged=True)))],
    ),
    "Create Sensitive Mount Pod": (
        [k("create", "pods", body=pod_body(ctr(), volumes=[{"name": "v", "hostPath": {"path": "/etc"}}]))],
        [k("create", "pods", body=pod_body(ctr(), volumes=[{"name": "v", "hostPath": {"path": "/data"}}]))],
    ),
    "Create HostNetwork Pod": ([k("create", "pods", body=pod_body(ctr(), hostNetwork=True))],
                               [k("create", "pods", body=pod_body(ctr(), hostNetwork=False))]),
    "Create HostPid Pod": ([k("create", "pods", body=pod_body(ctr(), hostPID=True))], [k("create", "pods", body=pod_body(ctr()))]),
    "Create HostIPC Pod": ([k("create", "pods", body=pod_body(ctr(), hostIPC=True))], [k("create", "pods", body=pod_body(ctr()))]),
    "Create NodePort Service": ([k("create", "services", body={"spec": {"type": "NodePort"}})],
                                [k("create", "services", body={"spec": {"type": "ClusterIP"}})]),
    "Create/Modify Configmap With Private Credentials": (
        [k("update", "configmaps", body={"data": {"db_password": "x"}})],
        [k("update", "configmaps", body={"data": {"color": "blue"}})],
    ),
    "Anonymous Request Allowed": ([k("get", "pods", user="system:anonymous", uri="/api/v1/pods")],
                                  [k("get", "pods", user="system:anonymous", uri="/healthz")]),
    "Attach/Exec Pod": ([k("create", "pods", sub="exec", stage="ResponseStarted")],
                        [k("create", "pods", sub="exec"), k("create", "pods", sub="log", stage="ResponseStarted")]),
    "port-forward": ([k("create", "pods", sub="portforward")], [k("create", "pods", sub="exec")]),
    "EphemeralContainers Created": ([k("patch", "pods", sub="ephemeralcontainers")], [k("get", "pods", sub="ephemeralcontainers")]),
    "Create Disallowed Namespace": ([k("create", "namespaces", name="evil")], [k("create", "namespaces", name="default")]),
    "Pod Created in Kube Namespace": ([k("create", "pods", ns="kube-system", body=pod_body(ctr("evil")))],
                                      [k("create", "pods", ns="kube-system", body=pod_body(ctr("registry.k8s.io/kube-apiserver:v1")))]),
    "Service Account Created in Kube Namespace": ([k("create", "serviceaccounts", ns="kube-system", name="evil")],
                                                  [k("create", "serviceaccounts", ns="kube-system", name="coredns")]),
    "System ClusterRole Modified/Deleted": ([k("delete", "clusterroles", name="system:node")],
                                            [k("delete", "clusterroles", name="system:coredns")]),
    "Attach to cluster-admin Role": ([k("create", "clusterrolebindings", body={"roleRef": {"name": "cluster-admin"}})],
                                     [k("create", "clusterrolebindings", body={"roleRef": {"name": "view"}})]),
    "ClusterRole With Wildcard Created": ([k("create", "clusterroles", body=WILD_ROLE)], [k("create", "clusterroles", body=READ_ROLE)]),
    "ClusterRole With Write Privileges Created": ([k("create", "clusterroles", body=ROLE)], [k("create", "clusterroles", body=READ_ROLE)]),
    "ClusterRole With Pod Exec Created": ([k("create", "roles", body=ROLE)], [k("create", "roles", body=READ_ROLE)]),
    "K8s Secret Get Successfully": ([k("get", "secrets", code=200)], [k("get", "secrets", code=403)]),
    "K8s Secret Get Unsuccessfully Tried": ([k("get", "secrets", code=403)], [k("get", "secrets", code=200)]),
    "K8s Secret Created": ([k("create", "secrets")], [k("create", "secrets", ns="kube-system")]),
    "Ingress Object without TLS Certificate Created": (
        [k("create", "ingresses", body={"spec": {"rules": []}})],
        [k("create", "ingresses", body={"spec": {"tls": [{"hosts": ["a"]}]}})],
    ),
}  # fmt: skip
ACTIVITY = {  # the "K8s <Kind> Created/Deleted" rules: a successful create or delete of the kind
    "Deployment": "deployments", "Service": "services", "ConfigMap": "configmaps", "Namespace": "namespaces",
    "Serviceaccount": "serviceaccounts", "Role": "roles", "ClusterRole": "clusterroles",
    "RoleBinding": "rolebindings", "ClusterRoleBinding": "clusterrolebindings", "Secret": "secrets",
}  # fmt: skip
for kind, resource in ACTIVITY.items():
    for verb, done in (("create", "Created"), ("delete", "Deleted")):
        FALCO_CASES.setdefault(
            f"K8s {kind} {done}",
            ([k(verb, resource, code=200)], [k(verb, resource, code=409), k("get", resource, code=200)]),
        )
OFF = {"Create Disallowed Pod", "All K8s Audit Events", "Full K8s Administrative Access",
       "Untrusted Node Successfully Joined the Cluster", "Untrusted Node Unsuccessfully Tried to Join the Cluster"}  # fmt: skip


def test_every_falco_rule_has_cases_or_is_switched_off_as_published():
    specs = falco_specs()
    assert set(specs) == set(FALCO_CASES) | OFF
    lines = b"".join(
        json.dumps(k("create", r, user=u)).encode() + b"\n" for r in ("nodes", "pods") for u in ("admin", "x")
    )
    for name in OFF:
        planned = rule_plan(specs[name])
        assert planned.translated.notes, name
        evaluator = Evaluator(planned.plan)
        assert list(evaluator.records(lines)) == [] and evaluator.counters.skipped == 4, name  # none is even parsed


@pytest.mark.parametrize("name", sorted(FALCO_CASES))
def test_each_falco_rule_on_events_that_must_and_must_not_match(name):
    good, bad = FALCO_CASES[name]
    spec = falco_specs()[name]
    assert runs(spec, good) == [True] * len(good)
    assert runs(spec, bad) == [False] * len(bad)


OVERRIDE = """
- list: allowed_k8s_users
  items: [mallory]
  override: {items: append}
- macro: consider_all_events
  condition: (k8s_audit_always_true)
  override: {condition: replace}
- rule: Create Disallowed Namespace
  enabled: false
- rule: K8s Secret Created
  exceptions:
    - name: ci
      fields: [ka.user.name, ka.target.namespace]
      values: [[ci-bot, prod]]
  override: {exceptions: append}
"""


def test_a_users_override_file_changes_the_results_as_falco_would():
    before, after = falco_specs(), falco_specs(OVERRIDE)
    mallory = k("get", "pods", user="mallory")
    assert runs(before["Disallowed K8s User"], [mallory]) == [True]
    assert runs(after["Disallowed K8s User"], [mallory]) == [False]  # the list appended
    assert runs(after["All K8s Audit Events"], [mallory]) == [True]  # the macro overridden turns it on
    assert "Create Disallowed Namespace" in before and "Create Disallowed Namespace" not in after
    ci, other = k("create", "secrets", user="ci-bot"), k("create", "secrets", user="ci-bot", ns="dev")
    assert runs(after["K8s Secret Created"], [ci, other]) == [False, True]  # the exception appended


def test_falco_operators_on_lists_missing_fields_and_repositories():
    def cond(text, **lists):
        return {"falco": {"rule": "r", "condition": text, "lists": lists}}

    two = k("create", "pods", body=pod_body(ctr("a/x:1"), ctr("b/y@sha256:00")))
    cases = {
        "ka.req.pod.containers.image.repository in (a/x, b/y)": True,  # every repository in the set
        "ka.req.pod.containers.image.repository in (a/x)": False,
        "ka.req.pod.containers.image.repository intersects (a/x)": True,
        "ka.req.pod.containers.image.repository intersects (a)": False,
        "ka.req.pod.containers.image intersects (a/x:1)": True,
        "not ka.req.pod.host_network exists": True,  # missing: every comparison false
        "ka.req.pod.host_network != true": False,
        "ka.target.name pmatch (/x, /nope)": True,
        "ka.user.name icontains BO": True,
        "ka.user.name contains BO": False,
        "ka.user.name glob 'b?b'": True,
        "ka.req.pod.containers.image[1] startswith b/": True,
        "ka.uri startswith /api and ka.verb in (my_verbs)": True,
    }
    two["objectRef"]["name"] = "/x/y"
    got = {c: runs(cond(c, my_verbs=["create"]), [two])[0] for c in cases}
    assert got == cases


def test_falco_errors_name_the_rule_the_field_and_the_column():
    def fails(text):
        with pytest.raises(RuleError) as caught:
            rule_plan({"falco": {"rule": "r", "condition": text}})
        return str(caught.value)

    assert (
        fails("ka.user.nam = x")
        == "spec.falco: rule 'r': condition: unknown field 'ka.user.nam' (did you mean ka.user.name?) at column 1"
    )
    assert "'proc.name' is a syscall field" in fails("proc.name = bash")
    assert fails("ka.verb = get and") == "spec.falco: rule 'r': condition: expected a condition at the end"
    assert "unknown macro 'kevtt'" in fails("kevtt")
    assert "is a list: it takes in, intersects or exists, not startswith" in fails("ka.user.groups startswith a")
    with pytest.raises(RuleError, match="priority 'LOUD'"):
        falco.translate(falco.FalcoRule("r", "ka.verb=get", priority="LOUD"))


def test_the_import_commands_write_manifests_and_list_what_they_did_not_import(tmp_path):
    code, out, err = auditwatch("import-sigma", SIGMA / "kubernetes_audit_exec_into_container.yml")
    assert code == 0 and out.startswith("---\n# Imported by `auditwatch import-sigma`"), err
    assert yaml.safe_load(out.split("\n", 1)[1])["spec"]["sigma"].startswith("title: Potential Remote Command")
    extra = tmp_path / "mine.yaml"
    extra.write_text("- rule: Shell\n  condition: proc.name = bash\n  output: x\n  priority: NOTICE\n"
                     "- rule: Create NodePort Service\n  enabled: false\n")  # fmt: skip
    code, _, err = auditwatch("import-falco", FALCO / "k8s_audit_rules.yaml", extra, "-o", tmp_path / "out")
    assert code == 0, err
    assert "imported 47 rules, 2 not imported" in err
    assert "not imported: Shell: source syscall: only k8s_audit rules read audit events" in err
    assert "not imported: Create NodePort Service: disabled (enabled: false)" in err
    assert len(list((tmp_path / "out").glob("falco-*.yaml"))) == 47
    broken = tmp_path / "broken.yml"
    broken.write_text("title: b\nlogsource: {product: windows}\ndetection: {s: {a: 1}, condition: s}\n")
    code, _, err = auditwatch("import-sigma", broken)
    assert code == 2 and f"auditwatch import-sigma: {broken}: logsource: b: logsource product 'windows'" in err
