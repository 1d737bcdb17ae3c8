"""Falco's k8saudit fields (``ka.*``) and the json plugin's (``jevt.*``) on the audit Event.

Each field is what the k8saudit plugin extracts (plugins/k8saudit/pkg/k8saudit/extract.go), named as
auditwatch reads it: a flattened name (``user.username``), a JSON pointer (the value there as text: a
string as itself, an object or a list as JSON, as the plugin writes them), or ``requestURI?NAME``.
``is_list`` fields are the plugin's lists: ``in`` needs every value in the set, ``intersects`` one.
``repository``: the values are images and the field is their repository, the text before the first ``:``
or ``@`` (as the plugin cuts it). Where auditwatch differs from the plugin, ``note`` says how.
"""

from __future__ import annotations

from dataclasses import dataclass

CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")


@dataclass(frozen=True)
class KaField:
    audit: str  # the audit Event field it reads
    is_list: bool = False
    repository: bool = False
    indexed: str | None = None  # with an index argument ([0]): this JSON pointer, {i} the index
    note: str = ""


def _container_fields() -> dict[str, KaField]:
    per_container = {  # ka.req.pod.<list>.<name> -> the key path in each container
        "name": "name",
        "image": "image",
        "command": "command{}",
        "args": "args{}",
        "privileged": "securityContext.privileged",
        "allow_privilege_escalation": "securityContext.allowPrivilegeEscalation",
        "read_only_fs": "securityContext.readOnlyRootFilesystem",
        "run_as_user": "securityContext.runAsUser",
        "run_as_group": "securityContext.runAsGroup",
        "proc_mount": "securityContext.procMount",
        "add_capabilities": "securityContext.capabilities.add{}",
        "host_port": "ports{}.hostPort",
    }
    notes = {
        "privileged": "containers without securityContext.privileged are skipped (the plugin then extracts "
        "nothing for the whole pod)",
        "host_port": "hostPort only (the plugin falls back to containerPort when a port has no hostPort)",
    }
    fields: dict[str, KaField] = {}
    for lst in CONTAINER_LISTS:
        for name, path in per_container.items():
            pointer_path = path.replace(".", "/").removesuffix("{}")
            indexed = None if "{}" in pointer_path else f"/requestObject/spec/{lst}/{{i}}/{pointer_path}"
            fields[f"ka.req.pod.{lst}.{name}"] = KaField(
                f"requestObject.spec.{lst}{{}}.{path}", True, indexed=indexed, note=notes.get(name, "")
            )
        fields[f"ka.req.pod.{lst}.image.repository"] = KaField(
            f"requestObject.spec.{lst}{{}}.image", True, True, indexed=f"/requestObject/spec/{lst}/{{i}}/image"
        )
    return fields


FIELDS: dict[str, KaField] = {
    "ka.auditid": KaField("auditID"),
    "ka.stage": KaField("stage"),
    "ka.auth.decision": KaField("annotations.authorization.k8s.io/decision"),
    "ka.auth.reason": KaField("annotations.authorization.k8s.io/reason"),
    "ka.user.name": KaField("user.username"),
    "ka.user.groups": KaField("user.groups{}", True),
    "ka.impuser.name": KaField("impersonatedUser.username"),
    "ka.verb": KaField("verb"),
    "ka.uri": KaField("requestURI"),
    "ka.uri.param": KaField("requestURI?{key}", note="read for a finding's output, not by a condition"),
    "ka.target.name": KaField("objectRef.name"),
    "ka.target.namespace": KaField("objectRef.namespace"),
    "ka.target.resource": KaField("objectRef.resource"),
    "ka.target.subresource": KaField("objectRef.subresource"),
    "ka.req.binding.subjects": KaField("/requestObject/subjects", note="the list as one JSON text"),
    "ka.req.binding.role": KaField("requestObject.roleRef.name"),
    "ka.req.configmap.name": KaField("objectRef.name"),
    "ka.req.configmap.obj": KaField("/requestObject/data"),
    "ka.req.container.image": KaField("/requestObject/spec/containers/0/image"),
    "ka.req.container.image.repository": KaField("/requestObject/spec/containers/0/image", repository=True),
    "ka.req.pod.host_ipc": KaField("requestObject.spec.hostIPC"),
    "ka.req.pod.host_network": KaField("requestObject.spec.hostNetwork"),
    "ka.req.container.host_network": KaField("requestObject.spec.hostNetwork"),
    "ka.req.pod.host_pid": KaField("requestObject.spec.hostPID"),
    "ka.req.pod.run_as_user": KaField("requestObject.spec.securityContext.runAsUser"),
    "ka.req.pod.run_as_group": KaField("requestObject.spec.securityContext.runAsGroup"),
    "ka.req.pod.fs_group": KaField("requestObject.spec.securityContext.fsGroup"),
    "ka.req.pod.supplemental_groups": KaField("requestObject.spec.securityContext.supplementalGroups{}", True),
    "ka.req.role.rules": KaField("/requestObject/rules", note="the list as one JSON text"),
    "ka.req.role.rules.apiGroups": KaField("requestObject.rules{}.apiGroups{}", True),
    "ka.req.role.rules.nonResourceURLs": KaField("requestObject.rules{}.nonResourceURLs{}", True),
    "ka.req.role.rules.verbs": KaField("requestObject.rules{}.verbs{}", True),
    "ka.req.role.rules.resources": KaField("requestObject.rules{}.resources{}", True),
    "ka.req.service.type": KaField("requestObject.spec.type"),
    "ka.req.service.ports": KaField("/requestObject/spec/ports", note="the list as one JSON text"),
    "ka.req.pod.volumes.hostpath": KaField(
        "requestObject.spec.volumes{}.hostPath.path", True, indexed="/requestObject/spec/volumes/{i}/hostPath/path"
    ),
    "ka.req.pod.volumes.flexvolume_driver": KaField("requestObject.spec.volumes{}.flexVolume.driver", True),
    "ka.resp.name": KaField("responseObject.metadata.name"),
    "ka.response.code": KaField("responseStatus.code"),
    "ka.response.reason": KaField("responseStatus.reason"),
    "ka.useragent": KaField("userAgent"),
    "ka.sourceips": KaField("sourceIPs{}", True),
    "jevt.obj": KaField("_raw", note="the event's text as read"),
    "jevt.value": KaField("{key}", note="the JSON pointer in brackets: jevt.value[/requestObject/spec/tls]"),
    "jevt.rawtime": KaField("_time", note="every event has one and it is never 0: exists is true, =0 false"),
    **_container_fields(),
}
