"""Prometheus metrics (``auditwatch run --metrics-listen``): what the operator does, where Prometheus scrapes.

Read at scrape time from what the operator already keeps: each running detection's last reported
part of its status (this replica's shard: its counters and sources, as ``kubectl get auditdetection
-o yaml`` shows them under ``status.shards``; Prometheus sums the replicas), the
write budget's counts, the webhook server's answers, the CloudWatch log groups' calls and the Pub/Sub
subscriptions' pulls. So the metrics and the status never disagree, and nothing on the event path is
slowed by them. Names follow Prometheus's conventions: an ``auditwatch_`` prefix, ``_total`` on counters, base units.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from auditwatch.runtime.loop_lag import BUCKETS, LoopLag

if TYPE_CHECKING:
    from auditwatch.api.models import ShardStatus
    from auditwatch.findings.alerts import Notifier
    from auditwatch.kube.budget import WriteBudget
    from auditwatch.runtime.readers import Readers
    from auditwatch.runtime.shards import ShardLeases
    from auditwatch.sources.webhook import WebhookServer

DETECTION = ["namespace", "detection"]
SOURCE = [*DETECTION, "source"]
# (counter status field, metric name, help)
COUNTERS = [
    ("lines", "lines_read", "Audit-log lines read by the detection."),
    ("skipped", "lines_skipped", "Lines the prefilter skipped without parsing them."),
    ("events", "events_decoded", "Audit events decoded."),
    ("malformed", "malformed_lines", "Lines that are no audit event (bad JSON, wrong shape), skipped."),
    ("longLines", "long_lines", "Lines longer than the source's maxLineBytes, skipped."),
    ("matched", "matched_events", "Events the search matched."),
    ("rows", "rows", "Result rows the search made."),
    ("findingsDropped", "findings_dropped", "Rows dropped because the detection had maxFindings findings."),
    ("eventsPosted", "kubernetes_events_posted", "Kubernetes Events posted about findings."),
    ("eventsFolded", "findings_folded", "Findings created or updated without an Event of their own."),
]


class Metrics:
    """The operator's metrics: detections report here, the HTTP server reads it."""

    def __init__(
        self,
        budget: WriteBudget,
        readers: Readers,
        webhooks: WebhookServer | None,
        notifier: Notifier | None = None,
        leases: ShardLeases | None = None,
    ) -> None:
        self.budget, self.readers, self.webhooks, self.notifier = budget, readers, webhooks, notifier
        self.leases = leases
        self.loop_lag = LoopLag()
        self.detections: dict[tuple[str, str], ShardStatus] = {}
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # CPU, memory, open files
        self.registry.register(_Collector(self))

    def report(self, namespace: str, name: str, status: ShardStatus) -> None:
        self.detections[namespace, name] = status

    def forget(self, namespace: str, name: str) -> None:
        self.detections.pop((namespace, name), None)

    def serve(self, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        start_http_server(int(port), host or "0.0.0.0", registry=self.registry)


class _Collector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:  # runs in the HTTP server's thread: copies before it iterates
        detections = list(self.m.detections.items())
        for field, name, text in COUNTERS:
            family = CounterMetricFamily(f"auditwatch_{name}", text, labels=DETECTION)
            for (namespace, detection), status in detections:
                family.add_metric([namespace, detection], getattr(status.counters, field, 0))
            yield family
        findings = GaugeMetricFamily("auditwatch_findings", "Findings the detection has.", labels=DETECTION)
        conflicts = CounterMetricFamily(
            "auditwatch_finding_write_conflicts",
            "Finding writes another replica's write overtook (409; read again and retried).",
            labels=DETECTION,
        )
        for (namespace, detection), status in detections:
            findings.add_metric([namespace, detection], status.counters.findings)
            conflicts.add_metric([namespace, detection], status.writes.conflicts)
        yield findings
        yield conflicts
        yield from _sources(detections)
        yield from self._operator()

    def _operator(self) -> Iterator[Metric]:
        budget = self.m.budget
        writes = CounterMetricFamily(
            "auditwatch_api_writes",
            "API writes by kind and result (ok, or the HTTP status or error)",
            labels=["kind", "result"],
        )
        for (kind, result), n in list(budget.writes.items()):
            writes.add_metric([kind, result], n)
        yield writes
        yield GaugeMetricFamily(
            "auditwatch_api_writes_waiting", "Writes waiting for the write budget.", value=budget.waiting
        )
        yield CounterMetricFamily("auditwatch_api_throttled", "429 and 5xx answers to writes.", value=budget.throttled)
        answers = CounterMetricFamily(
            "auditwatch_webhook_requests", "Audit webhook requests by answer.", labels=["code"]
        )
        if self.m.webhooks is not None:
            for code, n in list(self.m.webhooks.answers.items()):
                answers.add_metric([str(code)], n)
        yield answers
        calls = CounterMetricFamily("auditwatch_cloudwatch_calls", "FilterLogEvents calls.", labels=["log_group"])
        throttles = CounterMetricFamily(
            "auditwatch_cloudwatch_throttled", "FilterLogEvents calls throttled.", labels=["log_group"]
        )
        for (region, name), group in list(self.m.readers.log_groups.items()):
            calls.add_metric([f"{region}:{name}"], group.calls)
            throttles.add_metric([f"{region}:{name}"], group.throttled)
        yield calls
        yield throttles
        messages = CounterMetricFamily(
            "auditwatch_pubsub_messages",
            "Messages pulled from a Pub/Sub subscription: spooled, duplicate (spooled before), dropped (not audit).",
            labels=["subscription", "result"],
        )
        pulls = CounterMetricFamily("auditwatch_pubsub_pulls", "Pull calls.", labels=["subscription"])
        for puller in list(self.m.readers.pullers.values()):
            kept = puller.messages - puller.duplicates - puller.dropped
            for result, n in (("spooled", kept), ("duplicate", puller.duplicates), ("dropped", puller.dropped)):
                messages.add_metric([puller.path, result], n)
            pulls.add_metric([puller.path], puller.pulls)
        yield messages
        yield pulls
        records = CounterMetricFamily(
            "auditwatch_eventhub_events",
            "Audit Events fetched from an event hub: spooled, duplicate (spooled before), dropped (no audit Event).",
            labels=["hub", "result"],
        )
        hub_lag = GaugeMetricFamily(
            "auditwatch_eventhub_lag_records", "Records in this replica's partitions not yet fetched.", labels=["hub"]
        )
        stalls = CounterMetricFamily(
            "auditwatch_eventhub_stalls", "Receives that stalled and were restarted.", labels=["hub"]
        )
        for hub in list(self.m.readers.hubs.values()):
            kept = hub.events - hub.duplicates
            for result, n in (("spooled", kept), ("duplicate", hub.duplicates), ("dropped", hub.dropped)):
                records.add_metric([hub.origin, result], n)
            hub_lag.add_metric([hub.origin], hub.lag_records)
            stalls.add_metric([hub.origin], hub.stalls)
        yield records
        yield hub_lag
        yield stalls
        ages = GaugeMetricFamily(
            "auditwatch_shard_lease_age_seconds",
            "Seconds since this replica saw the shard's Lease renewed; past --shard-lease-seconds the shard is silent.",
            labels=["shard"],
        )
        for shard, age in (self.m.leases.ages() if self.m.leases is not None else {}).items():
            ages.add_metric([shard], age)
        yield ages
        yield from self._loop_lag()
        yield from self._alerts()

    def _loop_lag(self) -> Iterator[Metric]:
        lag = self.m.loop_lag
        cumulative, buckets = 0, []
        for bound, n in zip([*map(str, BUCKETS), "+Inf"], list(lag.counts), strict=True):
            cumulative += n
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily(
            "auditwatch_event_loop_lag_seconds",
            "How much later than asked the event loop ran a timer: what evaluation holds up writes and watches by.",
            buckets=buckets,
            sum_value=lag.total,
        )
        yield GaugeMetricFamily(
            "auditwatch_event_loop_lag_max_seconds", "The largest event-loop lag since start.", value=lag.largest
        )

    def _alerts(self) -> Iterator[Metric]:
        notices = CounterMetricFamily(
            "auditwatch_alert_notices",
            "Finding notices per alert receiver: sent, failed attempts, dropped from a full queue.",
            labels=["receiver", "result"],
        )
        queued = GaugeMetricFamily(
            "auditwatch_alert_notices_queued", "Notices waiting for their receiver.", labels=["receiver"]
        )
        if self.m.notifier is not None:
            for (receiver, result), n in list(self.m.notifier.sent.items()):
                notices.add_metric([receiver, result], n)
            for receiver in self.m.notifier.queues:
                queued.add_metric([receiver], self.m.notifier.pending(receiver))
        yield notices
        yield queued


def _sources(detections: list[tuple[tuple[str, str], Any]]) -> Iterator[Metric]:
    lag_bytes = GaugeMetricFamily(
        "auditwatch_source_lag_bytes", "Bytes written to the source and not yet read.", labels=SOURCE
    )
    lag_seconds = GaugeMetricFamily(
        "auditwatch_source_lag_seconds",
        "How far behind the clock a CloudWatch source is (promptWithin and settleDelay included); for a Pub/Sub"
        " source, publish to spool of the last pull's oldest message (an event hub's: enqueueing to spool).",
        labels=SOURCE,
    )
    ready = GaugeMetricFamily(
        "auditwatch_source_error", "1 while the source cannot be read (its status says why).", labels=SOURCE
    )
    truncated = CounterMetricFamily(
        "auditwatch_source_truncated_events",
        "CloudWatch events cut at the size limit, not evaluated (since the operator started).",
        labels=SOURCE,
    )
    for (namespace, detection), status in detections:
        for source in status.sources:
            labels = [namespace, detection, source.name]
            file = source.file or source.webhook or source.pubsub or source.azureBlob or source.eventHub  # 0 if n/a
            timed = source.cloudwatch or source.pubsub or source.eventHub
            lag_bytes.add_metric(labels, file.lagBytes if file else 0)
            lag_seconds.add_metric(labels, timed.lagSeconds if timed else 0)
            ready.add_metric(labels, 1 if source.lastError else 0)
            truncated.add_metric(labels, source.cloudwatch.truncated if source.cloudwatch else 0)
    yield lag_bytes
    yield lag_seconds
    yield ready
    yield truncated
