"""AuditDetection and DetectionFinding (group auditwatch.io, version v1alpha1).

Field names are the CRD's (camelCase). Every string has a max length and every list a max size, as
the Kubernetes API conventions ask; ``auditwatch crds`` turns these models into the CRD YAML.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from auditwatch.api.manifest import ManifestError, read_detection
from auditwatch.errors import Location
from auditwatch.times import DURATION, parse_duration, point_in_time

GROUP = "auditwatch.io"
VERSION = "v1alpha1"

Name = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
# A reader of one audit log: a node's name (DaemonSet), a webhook replica's pod name, or "default".
DEFAULT_SHARD = "default"  # the shard of a replica that is not one of several
ShardName = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")]
FieldName = Annotated[str, Field(min_length=1, max_length=256)]
Text = Annotated[str, Field(max_length=1024)]
Severity = Literal["informational", "low", "medium", "high", "critical"]


def check_duration(field: str, value: str) -> str:
    if not value or not DURATION.match(value) or not any(ch.isdigit() for ch in value):
        raise ValueError(f"{field} {value!r} is not a duration such as 24h, 90m or 1h30m")
    return value


class Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")


class FileSource(Model):
    """The kube-apiserver log backend's file (``--audit-log-path``)."""

    path: Annotated[str, Field(min_length=1, max_length=4096, description="Path of the audit log file.")]
    maxLineBytes: Annotated[int, Field(ge=1024, le=64 << 20, description="Longer lines are counted and skipped.")] = (
        4 << 20
    )


class WebhookSource(Model):
    """Batches POSTed by kube-apiserver's webhook backend to the operator's audit endpoint."""

    path: Annotated[str, Field(max_length=256, pattern=r"^/[-a-zA-Z0-9_/]*$")] = "/audit"


class PolledSource(Model):
    """A source read by polling a cloud service: its durations, and ``start``, where a new detection starts
    (what the source reads it as: ``times.point_in_time``)."""

    @field_validator("pollInterval", "promptWithin", "maxLateness", "sweepInterval", "settleDelay", check_fields=False)
    @classmethod
    def durations(cls, v: str, info: Any) -> str:
        return check_duration(info.field_name, v)

    @field_validator("start", check_fields=False)
    @classmethod
    def start_point(cls, v: str) -> str:
        try:
            point_in_time(v, 0)
        except ValueError as exc:
            raise ValueError(f"start {exc}") from None
        return v


class CloudWatchSource(PolledSource):
    """EKS control-plane audit logs in AWS CloudWatch Logs (sources/cloudwatch.py says how it is read)."""

    logGroup: Annotated[
        str,
        Field(
            min_length=1,
            max_length=512,
            pattern=r"^[.\-_/#A-Za-z0-9]+$",
            description="The cluster's log group: /aws/eks/CLUSTER/cluster.",
        ),
    ]
    region: Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z0-9-]+$")]
    logStreamPrefix: Annotated[
        str,
        Field(
            max_length=512,
            description="Audit streams only: kube-apiserver- alone also matches the API server's own log.",
        ),
    ] = "kube-apiserver-audit"
    pollInterval: Annotated[str, Field(max_length=32, description="How often new events are asked for.")] = "2s"
    promptWithin: Annotated[
        str,
        Field(
            max_length=32,
            description=(
                "Events that reach CloudWatch within this long of their timestamp are read once it has passed;"
                " later ones by the next sweep."
            ),
        ),
    ] = "30s"
    maxLateness: Annotated[
        str,
        Field(
            max_length=32,
            description=(
                "Events that reach CloudWatch later than this after their timestamp are counted as tooLate, not read."
            ),
        ),
    ] = "10m"
    sweepInterval: Annotated[
        str,
        Field(
            max_length=32,
            description=(
                "How often late events are looked for (a multiple of pollInterval). Each sweep reads maxLateness of"
                " the log group again: shorter finds late events sooner and costs more API calls."
            ),
        ),
    ] = "5m"
    settleDelay: Annotated[
        str, Field(max_length=32, description=("How long an ingested event may take to become readable."))
    ] = "5s"
    start: Annotated[
        str,
        Field(
            max_length=64, description=("Where a new detection starts: now, an RFC 3339 time, or a duration ago (24h).")
        ),
    ] = "now"

    @model_validator(mode="after")
    def sweep_fits(self) -> CloudWatchSource:
        poll, sweep = parse_duration(self.pollInterval), parse_duration(self.sweepInterval)
        if not poll or sweep % poll:
            raise ValueError(
                f"sweepInterval {self.sweepInterval} must be a multiple of pollInterval "
                f"{self.pollInterval}, which may not be 0s"
            )
        if parse_duration(self.promptWithin) >= parse_duration(self.maxLateness):
            raise ValueError(f"promptWithin {self.promptWithin} must be shorter than maxLateness {self.maxLateness}")
        return self


class PubSubSource(Model):
    """GKE audit logs that a Cloud Logging sink routes to a Pub/Sub topic, pulled from a subscription of it
    (sources/pubsub.py says how each is counted once); audit Events published as they are are read too."""

    project: Annotated[
        str,
        Field(
            min_length=6,
            max_length=30,
            pattern=r"^[a-z][-a-z0-9]*[a-z0-9]$",
            description="The Google Cloud project of the subscription.",
        ),
    ]
    subscription: Annotated[
        str,
        Field(
            min_length=3,
            max_length=255,
            pattern=r"^[A-Za-z][-A-Za-z0-9._~+%]*$",
            description="The subscription's ID (not its projects/.../subscriptions/... path).",
        ),
    ]
    maxMessages: Annotated[int, Field(ge=1, le=1000, description="Messages asked for in one pull.")] = 1000


class AzureBlobSource(PolledSource):
    """AKS audit logs archived by a diagnostic setting to a storage account: hourly append blobs, tailed by
    name and offset (sources/azureblob.py); minutes behind, and the cheapest path for many clusters."""

    accountUrl: Annotated[
        str,
        Field(
            max_length=512,
            pattern=r"^https?://[^/?#]+(/[^?#]*)?$",
            description="The storage account's blob endpoint: https://ACCOUNT.blob.core.windows.net.",
        ),
    ]
    container: Annotated[
        str,
        Field(
            min_length=3,
            max_length=63,
            pattern=r"^[a-z0-9](-?[a-z0-9])*$",
            description="insights-logs-kube-audit, or insights-logs-kube-audit-admin (writes only).",
        ),
    ] = "insights-logs-kube-audit"
    prefix: Annotated[
        str,
        Field(
            max_length=1024,
            description="The cluster's blobs: resourceId=/SUBSCRIPTIONS/ID/RESOURCEGROUPS/RG/PROVIDERS/"
            "MICROSOFT.CONTAINERSERVICE/MANAGEDCLUSTERS/NAME/ (empty: every cluster archived there).",
        ),
    ] = ""
    pollInterval: Annotated[str, Field(max_length=32, description="How often the blobs are listed.")] = "30s"
    settleDelay: Annotated[
        str,
        Field(
            max_length=32,
            description="An hour's blob not grown for this long, with a newer one there, is done: what is "
            "appended to it later is counted as lateBytes, not read.",
        ),
    ] = "10m"
    start: Annotated[
        str,
        Field(
            max_length=64,
            description="Where a new detection starts: now (this hour's blob), an RFC 3339 "
            "time or a duration ago (24h): the blob of that hour.",
        ),
    ] = "now"


class EventHubSource(Model):
    """AKS audit logs that a diagnostic setting streams to an event hub, read through Event Hubs' Kafka
    endpoint as a member of a consumer group: the replicas share the hub's partitions (sources/eventhub.py
    says how each event is counted once)."""

    namespace: Annotated[
        str,
        Field(
            min_length=6,
            max_length=253,
            pattern=r"^[A-Za-z][-A-Za-z0-9]{4,48}[A-Za-z0-9](\.[-A-Za-z0-9]+)*$",
            description="The Event Hubs namespace: NAME (NAME.servicebus.windows.net), or its host name in "
            "another Azure cloud.",
        ),
    ]
    hub: Annotated[
        str,
        Field(
            min_length=1,
            max_length=256,
            pattern=r"^[A-Za-z0-9]([-._A-Za-z0-9]*[A-Za-z0-9])?$",
            description="The event hub the cluster's diagnostic setting streams kube-audit to.",
        ),
    ]
    consumerGroup: Annotated[
        str,
        Field(
            min_length=1,
            max_length=255,
            pattern=r"^[-._$A-Za-z0-9]+$",
            description="The Kafka consumer group the replicas share (its offsets are the checkpoints).",
        ),
    ] = "auditwatch"
    maxRecords: Annotated[int, Field(ge=1, le=5000, description="Records (Event Hubs events) in one fetch.")] = 500
    start: Annotated[
        Literal["earliest", "latest"],
        Field(
            description="Where a consumer group with no offsets starts: latest (new events) or earliest "
            "(what the hub retains)."
        ),
    ] = "latest"


SourceKind = Literal["file", "webhook", "cloudwatch", "pubsub", "azureBlob", "eventHub"]
# each a member of Source and SourceStatus
SOURCE_KINDS: tuple[SourceKind, ...] = ("file", "webhook", "cloudwatch", "pubsub", "azureBlob", "eventHub")


class Source(Model):
    """One audit-log source; exactly one of file, webhook, cloudwatch, pubsub, azureBlob, eventHub."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "(has(self.file) ? 1 : 0) + (has(self.webhook) ? 1 : 0)"
                    " + (has(self.cloudwatch) ? 1 : 0) + (has(self.pubsub) ? 1 : 0)"
                    " + (has(self.azureBlob) ? 1 : 0) + (has(self.eventHub) ? 1 : 0) == 1",
                    "message": "a source sets exactly one of file, webhook, cloudwatch, pubsub, azureBlob, eventHub",
                }
            ]
        }
    )

    name: Name
    file: FileSource | None = None
    webhook: WebhookSource | None = None
    cloudwatch: CloudWatchSource | None = None
    pubsub: PubSubSource | None = None
    azureBlob: AzureBlobSource | None = None
    eventHub: EventHubSource | None = None

    @model_validator(mode="after")
    def one_kind(self) -> Source:
        kinds = [k for k in SOURCE_KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"source {self.name!r} must set exactly one of {', '.join(SOURCE_KINDS)}")
        return self

    @property
    def kind(self) -> SourceKind:
        """Which of ``SOURCE_KINDS`` this source is."""
        return next(k for k in SOURCE_KINDS if getattr(self, k) is not None)


class FindingPolicy(Model):
    """How rows become DetectionFindings."""

    groupBy: Annotated[
        list[FieldName],
        Field(max_length=8, description="Output fields whose values identify one finding."),
    ] = Field(default_factory=lambda: ["user", "src_ip"])
    message: Annotated[str, Field(max_length=1024, description="ESCU rba.message; $field$ tokens filled.")] = ""
    riskScore: Annotated[int, Field(ge=0, le=100)] = 50
    severity: Severity = "medium"
    maxFindings: Annotated[int, Field(ge=1, le=10000)] = 1000
    ttl: Annotated[str, Field(max_length=32, description="Findings not seen for this long expire: 168h.")] = "168h"

    @field_validator("ttl")
    @classmethod
    def duration(cls, v: str) -> str:
        return check_duration("ttl", v)


class FalcoRuleSpec(Model):
    """A Falco ``k8s_audit`` rule with the macros and lists it uses (``auditwatch import-falco`` writes it)."""

    rule: Annotated[str, Field(min_length=1, max_length=256, description="The rule's name.")]
    condition: Annotated[str, Field(min_length=1, max_length=16384, description="In Falco's filter language.")]
    output: Annotated[str, Field(max_length=4096, description="%field tokens become the finding's message.")] = ""
    priority: Annotated[str, Field(max_length=16)] = "WARNING"
    macros: Annotated[dict[str, Annotated[str, Field(max_length=8192)]], Field(max_length=128)] = Field(
        default_factory=dict
    )
    lists: Annotated[
        dict[str, Annotated[list[Annotated[str, Field(max_length=512)]], Field(max_length=1024)]],
        Field(max_length=128),
    ] = Field(default_factory=dict)


RULE_LANGUAGES = ("search", "sigma", "falco")  # an AuditDetection's rule: exactly one of these


class AuditDetectionSpec(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "(has(self.search) ? 1 : 0) + (has(self.sigma) ? 1 : 0) + (has(self.falco) ? 1 : 0) == 1",
                    "message": "a detection sets exactly one of search, sigma, falco",
                }
            ]
        }
    )

    search: Annotated[str | None, Field(min_length=1, max_length=16384, description="SPL, as in an ESCU search.")] = (
        None
    )
    sigma: Annotated[
        str | None, Field(min_length=1, max_length=65536, description="A Sigma rule, its YAML as published.")
    ] = None
    falco: FalcoRuleSpec | None = None
    macros: Annotated[
        dict[str, Annotated[str, Field(max_length=4096)]],
        Field(max_length=64, description="name or name(arg, ...) -> SPL definition."),
    ] = Field(default_factory=dict)
    sources: Annotated[list[Source], Field(max_length=8)] = Field(default_factory=list)
    finding: FindingPolicy = Field(default_factory=FindingPolicy)
    window: Annotated[
        str,
        Field(
            max_length=32,
            description="Time window of stats other than a plain count (ESCU's schedule: 60m). Rows come out "
            "when they first pass the whole search and are updated as the window fills.",
        ),
    ] = "60m"

    @field_validator("window")
    @classmethod
    def window_duration(cls, v: str) -> str:
        return check_duration("window", v)

    @model_validator(mode="after")
    def one_rule(self) -> AuditDetectionSpec:
        if sum(getattr(self, k) is not None for k in RULE_LANGUAGES) != 1:
            raise ValueError(f"a detection sets exactly one of {', '.join(RULE_LANGUAGES)}")
        return self

    @property
    def language(self) -> str:
        """Which of ``RULE_LANGUAGES`` the rule is in (also its field: spec.<language>)."""
        return next(k for k in RULE_LANGUAGES if getattr(self, k) is not None)

    @field_validator("sources")
    @classmethod
    def unique_names(cls, v: list[Source]) -> list[Source]:
        names = [s.name for s in v]
        if len(names) != len(set(names)):
            raise ValueError("source names must be unique")
        return v


class ConditionType(StrEnum):
    READY = "Ready"  # the detection runs
    SOURCES_READY = "SourcesReady"  # every source is being read
    LINT_CLEAN = "LintClean"  # `auditwatch lint` has no warning


class StatusReason(StrEnum):
    """The reason of a condition. The ones that keep a detection from running are also the codes
    `auditwatch lint` prints, so the two say the same thing."""

    RUNNING = "Running"
    INVALID_SPEC = "InvalidSpec"  # the spec fails the schema (what the API server did not check)
    INVALID_SEARCH = "InvalidSearch"  # the SPL does not parse, or a database it needs is missing
    LINT_ERROR = "LintError"  # lint finds an error: the search can never produce a row
    UNSUPPORTED_SOURCE = "UnsupportedSource"  # a source kind this operator cannot read
    PATH_NOT_ALLOWED = "PathNotAllowed"  # a file outside the directories the administrator allows
    NAMESPACE_NOT_ALLOWED = "NamespaceNotAllowed"  # detections do not run in this namespace
    NOT_STARTED = "NotStarted"
    READING = "Reading"
    SOURCE_UNAVAILABLE = "SourceUnavailable"
    CLEAN = "Clean"
    LINT_WARNINGS = "LintWarnings"


# A list of objects merged by their ``type`` (server-side apply), as kubebuilder marks conditions.
MAP_LIST_BY_TYPE = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}


class Condition(Model):
    """metav1.Condition's shape."""

    type: Annotated[str, Field(max_length=64)]
    status: Literal["True", "False", "Unknown"]
    reason: Annotated[str, Field(max_length=64)] = ""
    message: Annotated[str, Field(max_length=4096)] = ""
    lastTransitionTime: Annotated[str, Field(max_length=64)] = ""
    observedGeneration: int = 0


class FilePositionStatus(Model):
    """Where a file is read up to: a file source's log, or the spool a webhook source's batches are kept in."""

    path: Annotated[str, Field(max_length=4096, description="The file being read.")] = ""
    inode: Annotated[int, Field(ge=0)] = 0
    offset: Annotated[int, Field(ge=0, description="Bytes of that file read and counted.")] = 0
    lagBytes: Annotated[int, Field(ge=0, description="Bytes written but not yet read.")] = 0


class CloudWatchStatus(Model):
    """Where a CloudWatch log group is read up to, and how its reading goes (sources/cloudwatch.py)."""

    promptThrough: Annotated[
        str, Field(max_length=40, description="Events stamped before this time that arrived promptly have been read.")
    ] = ""
    lateThrough: Annotated[
        str, Field(max_length=40, description="Late events ingested up to this time have been read.")
    ] = ""
    newestEvent: Annotated[str, Field(max_length=40, description="The newest event time read.")] = ""
    lagSeconds: Annotated[
        int,
        Field(ge=0, description="How far behind the clock the prompt read is (promptWithin and settleDelay included)."),
    ] = 0
    apiCalls: Annotated[int, Field(ge=0, description="FilterLogEvents calls to the log group.")] = 0
    throttled: Annotated[int, Field(ge=0, description="Calls answered ThrottlingException.")] = 0
    truncated: Annotated[int, Field(ge=0, description="Events cut at the size limit, not read.")] = 0
    lastTruncated: Annotated[str, Field(max_length=64, description="The auditID of the last truncated event.")] = ""
    tooLate: Annotated[int, Field(ge=0, description="Events seen arriving after maxLateness.")] = 0


class PubSubStatus(FilePositionStatus):
    """Where the spool of a subscription's messages is read up to, and how pulling goes (sources/pubsub.py)."""

    messages: Annotated[int, Field(ge=0, description="Messages pulled, repeats included.")] = 0
    duplicates: Annotated[int, Field(ge=0, description="Messages dropped as already spooled (redelivered).")] = 0
    redelivered: Annotated[
        int, Field(ge=0, description="Messages whose delivery attempt was above 1 (known with a dead-letter policy).")
    ] = 0
    dropped: Annotated[int, Field(ge=0, description="Messages that are neither a GKE audit entry nor an Event.")] = 0
    lastDropped: Annotated[str, Field(max_length=256, description="Why the last dropped message was.")] = ""
    pulls: Annotated[int, Field(ge=0, description="Pull calls.")] = 0
    lagSeconds: Annotated[
        int, Field(ge=0, description="From publishing to spooling, for the oldest message of the last pull.")
    ] = 0


class AzureBlobStatus(Model):
    """Where a storage account's audit blobs are read up to, and how reading goes (sources/azureblob.py)."""

    blob: Annotated[str, Field(max_length=1024, description="The blob being read.")] = ""
    offset: Annotated[int, Field(ge=0, description="Bytes of that blob read.")] = 0
    lagBytes: Annotated[int, Field(ge=0, description="Bytes in that blob and newer ones not yet read.")] = 0
    newestBlob: Annotated[str, Field(max_length=1024, description="The newest blob listed.")] = ""
    lateBytes: Annotated[
        int, Field(ge=0, description="Bytes appended to a blob after it was done (settleDelay), not read.")
    ] = 0
    dropped: Annotated[int, Field(ge=0, description="Lines that are no diagnostic record of an audit Event.")] = 0
    apiCalls: Annotated[int, Field(ge=0, description="List and read calls to the storage account.")] = 0


class EventHubStatus(FilePositionStatus):
    """Where the spool of an event hub's records is read up to, and how reading goes (sources/eventhub.py)."""

    records: Annotated[int, Field(ge=0, description="Records (Event Hubs events) fetched, repeats included.")] = 0
    events: Annotated[int, Field(ge=0, description="Audit Events in them, repeats included.")] = 0
    duplicates: Annotated[int, Field(ge=0, description="Audit Events dropped as already spooled.")] = 0
    dropped: Annotated[int, Field(ge=0, description="Records or diagnostic records that are no audit Event.")] = 0
    lastDropped: Annotated[str, Field(max_length=256, description="Why the last dropped one was.")] = ""
    fetches: Annotated[int, Field(ge=0, description="Fetch rounds.")] = 0
    stalls: Annotated[int, Field(ge=0, description="Times the receive stalled and its consumer was replaced.")] = 0
    partitions: Annotated[
        dict[str, int],
        Field(max_length=2048, description="This replica's partitions and the offset each is spooled up to."),
    ] = {}
    lagRecords: Annotated[int, Field(ge=0, description="Records in this replica's partitions not yet fetched.")] = 0
    lagSeconds: Annotated[
        int, Field(ge=0, description="From enqueueing to spooling, for the oldest record of the last fetch.")
    ] = 0


class SourceStatus(Model):
    """Where a source has been read up to, checkpointed with the findings it produced: ``seq`` and the
    position of the source's kind, in the sub-object named as the kind is in the spec."""

    name: Name
    seq: Annotated[int, Field(ge=0, description="Bytes read from this source in all, across rotations.")] = 0
    file: FilePositionStatus | None = None
    webhook: FilePositionStatus | None = None
    cloudwatch: CloudWatchStatus | None = None
    pubsub: PubSubStatus | None = None
    azureBlob: AzureBlobStatus | None = None
    eventHub: EventHubStatus | None = None
    lastError: Annotated[str, Field(max_length=1024)] = ""

    @model_validator(mode="before")
    @classmethod
    def flat(cls, data: Any) -> Any:
        """A status written before positions had a sub-object per kind (every field at the top) is read
        into the sub-object of its kind, so an upgrade resumes where the old version stopped."""
        if not isinstance(data, dict):
            return data
        if not (data.keys() & (FLAT_FILE - {"file"} | FLAT_CLOUDWATCH) or isinstance(data.get("file"), str)):
            return data
        data = dict(data)
        file_part = {k: data.pop(k) for k in FLAT_FILE & data.keys()}
        cloudwatch = {k: data.pop(k) for k in FLAT_CLOUDWATCH & data.keys()}
        if "file" in file_part:
            file_part["path"] = file_part.pop("file")
        if cloudwatch.get("promptThrough"):
            data["cloudwatch"] = cloudwatch
        elif file_part.get("inode"):
            data["webhook" if str(file_part.get("path", "")).startswith("webhook:") else "file"] = file_part
        return data


FLAT_FILE = frozenset({"file", "inode", "offset", "lagBytes"})
FLAT_CLOUDWATCH = frozenset(CloudWatchStatus.model_fields)


class CounterStatus(Model):
    lines: int = 0
    skipped: int = 0
    events: int = 0
    malformed: int = 0
    longLines: int = 0
    matched: int = 0
    rows: int = 0
    findings: int = 0
    findingsDropped: int = 0
    eventsPosted: int = 0
    eventsFolded: Annotated[int, Field(description="Findings created or updated without an Event of their own.")] = 0

    def plus(self, other: CounterStatus, sign: int = 1) -> CounterStatus:
        """These counters with ``other``'s added (``sign`` -1: taken away, never below 0)."""
        theirs = other.model_dump()
        return CounterStatus(**{k: max(0, v + sign * theirs[k]) for k, v in self.model_dump().items()})


class WriteStatus(Model):
    """How far behind the API writes are: counts wait for the operator's write budget, never lost."""

    pendingFindings: Annotated[int, Field(ge=0, description="Findings with counts not yet written.")] = 0
    oldestPendingSeconds: Annotated[int, Field(ge=0, description="How long the oldest of them has waited.")] = 0
    waitingWrites: Annotated[int, Field(ge=0, description="Operator-wide: writes waiting for the budget.")] = 0
    throttled: Annotated[int, Field(ge=0, description="Operator-wide: 429 and 5xx answers to writes.")] = 0
    conflicts: Annotated[
        int, Field(ge=0, description="Finding writes another shard's write overtook (read again and retried).")
    ] = 0


class ShardStatus(Model):
    """One shard's reading of a detection: its sources' positions and errors, its counters."""

    sources: Annotated[list[SourceStatus], Field(max_length=8)] = Field(default_factory=list)
    counters: CounterStatus = Field(default_factory=CounterStatus)
    writes: WriteStatus = Field(default_factory=WriteStatus)


MAX_RETIRED = 16


class RetiredShards(Model):
    """Shards gone long enough to be retired (runtime/retire.py): their counters kept in the total, the
    latest retired shards' parts kept whole, so a shard that comes back under its name resumes from its
    positions."""

    counters: Annotated[CounterStatus, Field(description="All retired shards' counters together.")] = Field(
        default_factory=CounterStatus
    )
    shards: Annotated[
        dict[ShardName, ShardStatus],
        Field(max_length=MAX_RETIRED, description="The latest retired shards' parts, as they were last written."),
    ] = Field(default_factory=dict)
    retiredAt: Annotated[
        dict[ShardName, Annotated[str, Field(max_length=64)]],
        Field(max_length=MAX_RETIRED, description="When each of those shards was retired."),
    ] = Field(default_factory=dict)


class AuditDetectionStatus(Model):
    observedGeneration: int = 0
    conditions: Annotated[
        list[Condition],
        Field(
            max_length=8, json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}
        ),
    ] = Field(default_factory=list)
    counters: Annotated[CounterStatus, Field(description="All shards' counters together.")] = Field(
        default_factory=CounterStatus
    )
    shards: Annotated[
        dict[ShardName, ShardStatus],
        Field(max_length=64, description="Each shard's part: a shard reads one audit log (a node, a webhook replica)."),
    ] = Field(default_factory=dict)
    retired: RetiredShards | None = None


class ObjectMeta(BaseModel):
    """The metadata fields auditwatch writes; the CRD leaves metadata to the API server."""

    model_config = ConfigDict(extra="allow")
    name: str = ""
    namespace: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] | None = None
    ownerReferences: list[dict[str, Any]] = Field(default_factory=list)


class AuditDetection(Model):
    apiVersion: Literal["auditwatch.io/v1alpha1"] = "auditwatch.io/v1alpha1"
    kind: Literal["AuditDetection"] = "AuditDetection"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: AuditDetectionSpec
    status: AuditDetectionStatus | None = None


class DetectionFindingSpec(Model):
    detection: Name
    key: Annotated[dict[str, Annotated[str, Field(max_length=1024)]], Field(max_length=8)]
    message: Text = ""
    severity: Severity = "medium"
    riskScore: Annotated[int, Field(ge=0, le=100)] = 50
    mitre: Annotated[
        str,
        Field(
            max_length=256,
            description=("The detection's MITRE ATT&CK techniques (its mitre-attack.escu.splunk.com/<ID> labels)."),
        ),
    ] = ""


MITRE_LABEL = "mitre-attack.escu.splunk.com/"
HUNT_LABEL = f"{GROUP}/hunt"  # on findings `auditwatch hunt` wrote (offline/hunt_findings.py): none of the operator's


def mitre_techniques(labels: dict[str, str] | None) -> str:
    """The MITRE ATT&CK technique IDs a detection's labels name, as import-escu writes them."""
    return ",".join(sorted(k.removeprefix(MITRE_LABEL) for k in labels or {} if k.startswith(MITRE_LABEL)))[:256]


class FindingPart(Model):
    """What one shard counted of a finding, and through where in its sources (aggregate.py)."""

    count: Annotated[int, Field(ge=0)] = 0
    firstSeen: Annotated[str, Field(max_length=64)] = ""
    lastSeen: Annotated[str, Field(max_length=64)] = ""
    checkpoints: Annotated[
        dict[str, Annotated[int, Field(ge=0)]],
        Field(max_length=8, description="Per source: the seq up to which this part includes events."),
    ] = Field(default_factory=dict)


class RetiredParts(Model):
    """The parts of shards gone long enough to be retired: counted in the total, and the latest retired
    shards' parts kept whole, so a shard that comes back under its name takes its part back (its
    checkpoints: nothing counted twice)."""

    count: Annotated[int, Field(ge=0, description="All retired parts together.")] = 0
    firstSeen: Annotated[str, Field(max_length=64)] = ""
    lastSeen: Annotated[str, Field(max_length=64)] = ""
    shards: Annotated[
        dict[ShardName, FindingPart],
        Field(max_length=MAX_RETIRED, description="The latest retired parts, whole."),
    ] = Field(default_factory=dict)


class DetectionFindingStatus(Model):
    count: Annotated[int, Field(description="All shards' parts together.")] = 0
    firstSeen: Annotated[str, Field(max_length=64)] = ""
    lastSeen: Annotated[str, Field(max_length=64)] = ""
    writtenAt: Annotated[
        str,
        Field(
            max_length=64,
            description="When the count was last written: events after it are counted but not shown yet "
            "(status.shards[].writes of the detection says how many findings wait, and how long).",
        ),
    ] = ""
    values: Annotated[
        dict[str, Annotated[list[Annotated[str, Field(max_length=1024)]], Field(max_length=20)]],
        Field(max_length=32, description="Distinct values per output field, the first 20 of each."),
    ] = Field(default_factory=dict)
    latest: Annotated[
        list[Annotated[dict[str, Annotated[str, Field(max_length=1024)]], Field(max_length=32)]],
        Field(max_length=5, description="The latest rows, newest first."),
    ] = Field(default_factory=list)
    shards: Annotated[
        dict[ShardName, FindingPart],
        Field(max_length=64, description="Each shard's part (one per audit log: a node, a webhook replica)."),
    ] = Field(default_factory=dict)
    retired: RetiredParts | None = None
    alert: Annotated[
        Literal["pending", "sent"] | None,
        Field(description="The creation notice to the alert receivers: pending until every one took it."),
    ] = None


class DetectionFinding(Model):
    apiVersion: Literal["auditwatch.io/v1alpha1"] = "auditwatch.io/v1alpha1"
    kind: Literal["DetectionFinding"] = "DetectionFinding"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: DetectionFindingSpec
    status: DetectionFindingStatus | None = None


def load_detection(path: str | Path) -> AuditDetection:
    """Read and validate an AuditDetection manifest (YAML or JSON); the error names each bad field."""
    try:
        return AuditDetection.model_validate(read_detection(path))
    except ValidationError as exc:
        raise ManifestError(f"invalid AuditDetection: {problems(exc)}", Location(str(path))) from None


def problems(exc: ValidationError, prefix: str = "") -> str:
    """A pydantic validation error as ``field.path: message; ...``."""
    return "; ".join(f"{prefix}{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False))


def detection_owner(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The ownerReference that makes an object (a finding, a Report) go with its AuditDetection: the
    garbage collector deletes it, without blocking the detection's deletion."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AuditDetection",
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": False,
    }
