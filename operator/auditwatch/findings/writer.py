"""Writing findings to the cluster: create-or-patch, coalesced, concurrent, with Events that do not flood.

At most one write per finding per ``min_interval`` seconds whatever the event rate. A new finding is
created with its count and checkpoints (one write: findings have no status subresource); after that,
this shard's part of a finding (count and checkpoints) and the sum go in one PATCH, conditional on the
object's resourceVersion (see aggregate.py for why that makes counts exactly-once across shards).
Writes of different findings run concurrently, each waiting for the operator's write budget
(kube/budget.py): a finding being created goes first, then counts by how long they have waited. A
failed write leaves the finding dirty, so the next flush writes it again with everything since.

Events: a Warning on the detection and on the finding when a finding is created, at most one
``FindingUpdated`` per finding per ``event_interval``, and one ``FindingsCapReached``. At most
``EVENTS_PER_WINDOW`` findings get their own Events per detection and ``event_interval``; the
others are folded into one ``FindingsSummary`` Event at the end of the interval, counted in the status.
Only the replica whose create succeeds announces a finding (Events and the alert, alerts.py); TTL
deletions are conditional too, so one replica tells of each.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from auditwatch.api.models import (
    GROUP,
    VERSION,
    DetectionFinding,
    DetectionFindingSpec,
    FindingPolicy,
    ObjectMeta,
    detection_owner,
    mitre_techniques,
)
from auditwatch.findings.aggregate import Aggregator, FindingState, left_over
from auditwatch.findings.alerts import Notice, Notifier
from auditwatch.kube.client import ApiException, Kube

EVENTS_PER_WINDOW = 5
MAX_CONFLICTS = 10  # writes of one finding retried after a 409 before the next flush tries again


class Writer:
    def __init__(
        self,
        kube: Kube,
        detection: dict[str, Any],
        policy: FindingPolicy,
        logger: logging.Logger | logging.LoggerAdapter[Any],
        min_interval: float = 1.0,
        event_interval: float = 60.0,
        notifier: Notifier | None = None,
    ) -> None:
        self.kube = kube
        self.detection = detection  # apiVersion, kind, metadata {name, namespace, uid}
        self.namespace = detection["metadata"]["namespace"]
        self.policy = policy
        self.logger = logger
        self.min_interval = min_interval
        self.event_interval = event_interval
        self.notifier = notifier
        self.cap_announced = False
        self.events_posted = 0
        self.events_folded = 0  # findings created or updated without an Event of their own
        self.conflicts = 0  # writes another shard's write had overtaken (read again and retried)
        self._writing: dict[str, asyncio.Task[None]] = {}
        self._posting: set[asyncio.Task[None]] = set()
        self._window = (0.0, 0)  # start of the current event interval, findings announced in it
        self._folded = {"created": 0, "updated": 0}

    def flush(self, aggregator: Aggregator, now: float | None = None) -> None:
        """Start writing the findings that are due; ``settle`` waits for the writes."""
        now = time.monotonic() if now is None else now
        for finding in aggregator.findings.values():
            due = finding.dirty and now - finding.written_at >= self.min_interval
            if due and finding.name not in self._writing:
                self._writing[finding.name] = asyncio.create_task(self._write(finding, now))
        if aggregator.dropped and not self.cap_announced:
            self.cap_announced = True
            self._post(
                self.detection,
                "Warning",
                "FindingsCapReached",
                f"more than {aggregator.max_findings} findings: new ones are counted in "
                f"status.counters.findingsDropped, not created",
            )
        if now - self._window[0] >= self.event_interval:
            self._summarize(now)

    async def settle(self, aggregator: Aggregator) -> bool:
        """Wait for the writes under way; True when every finding is written."""
        await asyncio.gather(*self._writing.values(), *self._posting, return_exceptions=True)
        return not any(f.dirty for f in aggregator.findings.values())

    async def drain(self, aggregator: Aggregator) -> None:
        """Write everything counted (before a generation hands over), until a write fails."""
        await self.settle(aggregator)
        self.flush(aggregator, float("inf"))
        await self.settle(aggregator)
        self._summarize(float("inf"))
        await self.settle(aggregator)

    async def _write(self, finding: FindingState, now: float) -> None:
        try:
            await self._create_and_patch(finding, now)
        except ApiException as exc:
            self.logger.warning("writing finding %s failed: %s %s", finding.name, exc.status, exc.reason)
        finally:
            self._writing.pop(finding.name, None)

    async def _create_and_patch(self, finding: FindingState, now: float) -> None:
        created = finding.uid == "" and await self._create(finding, now)
        if not created:
            await self._patch(finding)
        finding.written(now)
        if created:
            finding.announced_at = now
            self._announce(finding, "created", now)
            self.alert(finding, "created", now)
        elif now - finding.announced_at >= self.event_interval:
            finding.announced_at = now
            self._announce(finding, "updated", now)
        if (
            not created
            and self.notifier
            and finding.total > finding.alerted_count
            and now - finding.alerted_at >= self.notifier.update_interval
        ):
            self.alert(finding, "updated", now)

    async def _create(self, finding: FindingState, now: float, replacing: bool = False) -> bool:
        """Create the finding with its count and checkpoints: one write. False when another shard created
        it first (or this create was retried): its parts are then added to ours, to be patched. One a
        deleted detection of the same name left is deleted first (once)."""
        if self.notifier is not None:
            finding.alert = "pending"  # sent again after a restart until every receiver took it
        try:
            obj = await self.kube.create_finding(self.namespace, lambda: self._body(finding))
        except ApiException as exc:
            finding.unwritten()
            finding.alert = ""  # the creator's to tell
            if exc.status != 409:
                raise
            # Its FindingUpdated Events wait an interval as the creator's do.
            obj = await self.kube.get_finding(self.namespace, finding.name)
            if not replacing and left_over(obj, self.detection["metadata"].get("uid", "")):
                self.logger.info("finding %s was a deleted detection's: made again", finding.name)
                await self.kube.delete_finding(self.namespace, finding.name, obj["metadata"]["resourceVersion"])
                return await self._create(finding, now, replacing=True)
            finding.announced_at = now
            finding.absorb(obj, own=True)
            return False
        except BaseException:
            finding.unwritten()
            raise
        finding.absorb(obj)
        return True

    async def _patch(self, finding: FindingState) -> None:
        """Write this shard's part and the sum over the finding's object as last read; when another
        shard wrote meanwhile (409 Conflict on the resourceVersion), read it again and retry."""

        def patch() -> dict[str, Any]:  # made when the budget lets the write go: everything counted until then
            body: dict[str, Any] = {"status": finding.snapshot().model_dump(mode="json", exclude_none=True)}
            if (back := finding.reclaim()) is not None:  # this shard's retired part, taken back (retire.py)
                body["status"]["retired"] = back
            if finding.resource_version:
                body["metadata"] = {"resourceVersion": finding.resource_version}
            return body

        for attempt in range(1, MAX_CONFLICTS + 1):
            try:
                obj = await self.kube.patch_finding(self.namespace, finding.name, patch, finding.since)
            except ApiException as exc:
                finding.unwritten()
                if exc.status == 404:  # deleted by another shard (TTL): created again by the next write
                    finding.uid = finding.resource_version = ""
                if exc.status != 409 or attempt == MAX_CONFLICTS:
                    raise
                self.conflicts += 1
                finding.absorb(await self.kube.get_finding(self.namespace, finding.name))
                continue
            except BaseException:
                finding.unwritten()
                raise
            finding.absorb(obj)
            return

    def alert(self, finding: FindingState, what: str, now: float) -> None:
        """Queue a notice (alerts.py); a creation notice marks the finding ``sent`` once delivered."""
        if self.notifier is None:
            return
        finding.alerted_at, finding.alerted_count = now, finding.total
        meta = self.detection["metadata"]
        notice = Notice(
            what="created" if what == "created" else "updated",
            detection=meta["name"],
            namespace=self.namespace,
            finding=finding.name,
            key=dict(finding.key),
            message=finding.message,
            count=finding.total,
            first_seen=finding.seen_first,
            last_seen=finding.seen_last,
            severity=self.policy.severity,
            risk_score=self.policy.riskScore,
            mitre=mitre_techniques(meta.get("labels")),
        )
        self.notifier.notify(notice, (lambda _: self._delivered(finding)) if what == "created" else None)

    def _delivered(self, finding: FindingState) -> None:
        finding.alert = "sent"
        task = asyncio.create_task(self._record_sent(finding))
        self._posting.add(task)
        task.add_done_callback(self._posting.discard)

    async def _record_sent(self, finding: FindingState) -> None:
        try:
            await self.kube.patch_finding(self.namespace, finding.name, lambda: {"status": {"alert": "sent"}})
        except ApiException as exc:  # still "pending" in the cluster: sent once more after a restart
            self.logger.warning(
                "recording the alert for %s as sent failed: %s %s", finding.name, exc.status, exc.reason
            )

    def resume_alerts(self, aggregator: Aggregator) -> None:
        """Queue again the creation notices not yet taken when the operator last stopped."""
        for finding in aggregator.findings.values():
            if finding.alert == "pending":
                self.alert(finding, "created", time.monotonic())

    def _announce(self, finding: FindingState, what: str, now: float) -> None:
        """The finding's own Events, or a count for the interval's summary once enough were posted (the
        interval is rolled by ``flush``, before the writes it starts run)."""
        start, announced = self._window
        if announced >= EVENTS_PER_WINDOW:
            self._folded[what] += 1
            self.events_folded += 1
            return
        self._window = (start, announced + 1)
        if what == "created":
            text = f"{finding.message} ({finding.total} so far; finding {finding.name})"
            self._post(self.detection, "Warning", "FindingCreated", text)
            self._post(self._ref(finding), "Warning", "SuspiciousActivity", finding.message)
        else:
            self._post(self._ref(finding), "Warning", "FindingUpdated", f"{finding.message} ({finding.total} in all)")

    def _summarize(self, now: float) -> None:
        """Close the event interval: one Event for the findings folded in it."""
        created, updated = self._folded["created"], self._folded["updated"]
        if created or updated:
            name = self.detection["metadata"]["name"]
            self._post(
                self.detection,
                "Warning",
                "FindingsSummary",
                f"{created} more finding(s) created and {updated} updated in the last "
                f"{self.event_interval:.0f} s without Events of their own: "
                f"kubectl get findings -l {GROUP}/detection={name}",
            )
        self._folded = {"created": 0, "updated": 0}
        self._window = (now, 0)

    def _post(self, obj: dict[str, Any], kind: str, reason: str, message: str) -> None:
        """Post an Event when the budget allows, without holding up the caller."""
        self.events_posted += 1
        task = asyncio.create_task(self.kube.post_event(obj, kind, reason, message))
        self._posting.add(task)
        task.add_done_callback(self._posting.discard)

    def _body(self, finding: FindingState) -> dict[str, Any]:
        """The finding as created: its spec and its status as counted now (FindingState.snapshot)."""
        meta = self.detection["metadata"]
        body = DetectionFinding(
            metadata=ObjectMeta(
                name=finding.name,
                namespace=self.namespace,
                labels={f"{GROUP}/detection": meta["name"]},
                ownerReferences=[detection_owner(meta)],
            ),
            spec=DetectionFindingSpec(
                detection=meta["name"],
                key=finding.key,
                message=finding.message,
                severity=self.policy.severity,
                riskScore=self.policy.riskScore,
                mitre=mitre_techniques(meta.get("labels")),
            ),
            status=finding.snapshot(),
        )
        return body.model_dump(mode="json", exclude_none=True)

    def _ref(self, finding: FindingState) -> dict[str, Any]:
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "DetectionFinding",
            "metadata": {"name": finding.name, "namespace": self.namespace, "uid": finding.uid},
        }

    async def expire(self, aggregator: Aggregator, ttl_seconds: float) -> int:
        """Delete findings no shard has seen for ``ttl_seconds``; returns how many this replica deleted."""
        gone = aggregator.expire(ttl_seconds)
        deleted = 0
        for finding in gone:
            # Only as last read: a shard that counted since keeps it, and one Event tells of the deletion.
            try:
                done = await self.kube.delete_finding(self.namespace, finding.name, finding.resource_version)
            except ApiException as exc:  # kept in memory, so the next round expires it again
                aggregator.findings.setdefault(finding.name, finding)
                self.logger.warning("deleting expired finding %s failed: %s %s", finding.name, exc.status, exc.reason)
                continue
            if done:
                deleted += 1
                self._post(
                    self.detection, "Normal", "FindingExpired", f"{finding.name} not seen for {ttl_seconds:.0f} s"
                )
        return deleted
