"""Rows -> one finding per value of ``spec.finding.groupBy``, with exactly-once counts.

Exactly-once across restarts works like this. Every row a line produces carries the source and the
line's end ``seq`` (bytes read from the source so far, across rotations). A finding's status is
written in one PATCH with its count *and* ``checkpoints[source]``: the seq of the last line that count
includes. The detection's status stores, per source, a resume position no later than the first line
whose contribution is not yet written to some finding (``resume_seq``). After a restart the operator
reads again from that position and a row adds to a finding only when its seq is beyond the finding's
checkpoint. Killing the operator at any moment therefore neither loses a line (it is read again)
nor counts one twice (the checkpoint says it is already in).

Shards. Where several replicas read several audit logs (one per API server), each replica is a shard
with its own sources, positions and, in every finding, its own part (``status.shards[<shard>]``: count
and checkpoints), so the protocol above holds per shard. ``status.count`` is the parts' sum: a replica
writes its part and the sum computed from the object as last read, with that object's
``resourceVersion`` as a precondition; on a conflict it reads the finding again and retries
(writer.py), so no replica's update is lost and none needs a leader. Replicas watch the findings
(peers.py), so the object as last read is mostly the latest one and conflicts are rare.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from auditwatch.api.models import DEFAULT_SHARD, DetectionFindingStatus, FindingPart, RetiredParts
from auditwatch.audit.decode import epoch_seconds
from auditwatch.findings.retire import reclaim_finding, retired_parts
from auditwatch.times import utc_now

MAX_VALUES = 20
MAX_FIELDS = 32
MAX_LATEST = 5
MAX_TEXT = 1024
_TOKEN = re.compile(r"\$([A-Za-z0-9_.{}:/-]+)\$")


def left_over(obj: dict[str, Any], detection_uid: str) -> bool:
    """Whether a finding belongs to another detection of the same name, deleted (the garbage collector
    removes it soon): a detection deleted and applied again (``kubectl replace --force``, a GitOps
    re-create) must not count into, nor lose counts with, the old one's findings."""
    owners = (obj.get("metadata") or {}).get("ownerReferences") or []
    return bool(detection_uid) and bool(owners) and all(o.get("uid") != detection_uid for o in owners)


def finding_name(detection: str, key: dict[str, str]) -> str:
    """``<detection>-<hash of the key>``: the same finding gets the same name on every retry."""
    digest = hashlib.sha256(repr(sorted(key.items())).encode()).hexdigest()[:10]
    return f"{detection[:242]}-{digest}"


def render_message(template: str, row: dict[str, Any]) -> str:
    """The ESCU RBA message with ``$field$`` tokens filled from the row."""

    def value(m: re.Match[str]) -> str:
        v = row.get(m.group(1), "")
        return ", ".join(v) if isinstance(v, list) else str(v)

    return _TOKEN.sub(value, template)[:MAX_TEXT]


@dataclass
class FindingState:
    name: str
    key: dict[str, str]
    message: str
    count: int = 0
    first_seen: str = ""
    last_seen: str = ""
    values: dict[str, list[str]] = field(default_factory=dict)
    rendered: list[dict[str, str]] = field(default_factory=list)  # the latest rows as text, newest first
    recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_LATEST))  # rows since, as counted
    checkpoints: dict[str, int] = field(default_factory=dict)  # persisted: seq counted through
    counted: dict[str, int] = field(default_factory=dict)  # in memory: seq counted through
    # First line start, per source, of the contributions not yet written (pending) and of those in the
    # write under way (sending): the detection's checkpoint may not pass either (resume_seq).
    pending: dict[str, int] = field(default_factory=dict)
    sending: dict[str, int] = field(default_factory=dict)
    sending_counted: dict[str, int] = field(default_factory=dict)
    uid: str = ""  # set once the object exists in the cluster
    shard: str = DEFAULT_SHARD  # this replica's part is count, first/last seen and checkpoints above
    others: dict[str, dict[str, Any]] = field(default_factory=dict)  # other shards' parts, as last read
    retired: RetiredParts = field(default_factory=RetiredParts)  # gone shards' parts (retire.py), as last read
    resource_version: str = ""  # of the object as last read or written: the precondition of the next write
    since: float = 0.0  # monotonic time of the first count not yet written (the write's place in the budget)
    written_at: float = 0.0
    announced_at: float = 0.0
    # persisted: "pending" until every alert receiver took the creation notice (alerts.py), then "sent"
    alert: Literal["", "pending", "sent"] = ""
    alerted_at: float = float("-inf")  # monotonic time of the last notice
    alerted_count: int = 0  # the count the last notice said

    @property
    def latest(self) -> list[dict[str, str]]:
        """The ``MAX_LATEST`` latest rows as text, newest first (made into text when asked for, so the rows
        counted between two writes cost no more than a reference each)."""
        if self.recent:
            self.rendered = [*map(_row_text, self.recent), *self.rendered][:MAX_LATEST]
            self.recent.clear()
        return self.rendered

    @property
    def dirty(self) -> bool:
        """Counted in memory, not yet in any write; or this shard's part to take back from the retired."""
        return bool(self.pending) or self.shard in self.retired.shards

    def reclaim(self) -> dict[str, Any] | None:
        """The patch of the retired parts that takes this shard's out, when it is there (retire.py)."""
        return reclaim_finding(self.retired, self.shard)

    def snapshot(self) -> DetectionFindingStatus:
        """The status to write now, validated by its model (which copies the lists). Rows counted while
        the write is under way stay pending: the reader keeps running while the API call waits."""
        for source, seq in self.pending.items():
            self.sending[source] = min(seq, self.sending.get(source, seq))
        self.pending = {}
        self.sending_counted = dict(self.counted)
        part = FindingPart(
            count=self.count,
            firstSeen=self.first_seen,
            lastSeen=self.last_seen,
            checkpoints={**self.checkpoints, **self.counted},
        )
        return DetectionFindingStatus(
            count=self.total,
            firstSeen=self.seen_first,
            lastSeen=self.seen_last,
            writtenAt=utc_now(),
            values=self.values,
            latest=self.latest,
            shards={self.shard: part},
            alert=self.alert or None,
        )

    @property
    def total(self) -> int:
        """All shards' parts: this one's as counted, the others' and the retired ones as last read (this
        shard's retired part, if any, is in its count: it takes it back)."""
        retired = self.retired.count - (p.count if (p := self.retired.shards.get(self.shard)) else 0)
        return self.count + sum(int(p.get("count") or 0) for p in self.others.values()) + retired

    @property
    def seen_first(self) -> str:
        """The first event any shard counted."""
        others = (p.get("firstSeen") or "" for p in self.others.values())
        return _earliest(self.first_seen, self.retired.firstSeen, *others)

    @property
    def seen_last(self) -> str:
        """The last event any shard counted."""
        others = (str(p.get("lastSeen") or "") for p in self.others.values())
        return max([self.last_seen, self.retired.lastSeen, *others])

    def absorb(self, obj: dict[str, Any], own: bool = False) -> None:
        """Take the other shards' parts, the values and latest rows from the object as read from the
        cluster; with ``own``, this shard's part too, added to what is counted in memory (a finding
        this replica had let go of, say by TTL, that another replica kept; or its retired part, when the
        shard comes back under its name)."""
        self.uid = obj["metadata"]["uid"]
        self.resource_version = obj["metadata"].get("resourceVersion", "")
        status = obj.get("status") or {}
        parts = _parts(status)
        self.others = {k: v for k, v in parts.items() if k != self.shard}
        self.retired = retired_parts(status)
        for k, seen in (status.get("values") or {}).items():
            self.remember(k, seen)
        latest = self.latest
        self.rendered = [*latest, *(r for r in status.get("latest") or [] if r not in latest)][:MAX_LATEST]
        back = self.retired.shards.get(self.shard)
        if own and (part := parts.get(self.shard) or (back and back.model_dump())):
            self.count += int(part.get("count") or 0)
            self.first_seen = _earliest(self.first_seen, part.get("firstSeen") or "")
            self.last_seen = max(self.last_seen, part.get("lastSeen") or "")
            for source, seq in (part.get("checkpoints") or {}).items():
                self.checkpoints[source] = max(seq, self.checkpoints.get(source, 0))

    def observe(self, obj: dict[str, Any]) -> bool:
        """Another replica's write, seen on the findings watch: taken (as ``absorb`` takes a read) when it
        is of this object, not one deleted and made again, and later than what this replica last read or
        wrote, so that the next write's precondition holds. A finding not yet adopted (no uid) waits for
        its create or read, which also takes back a part of this shard's that it had let go of."""
        meta = obj["metadata"]
        if (
            not self.uid
            or meta.get("uid") != self.uid
            or not newer(meta.get("resourceVersion", ""), self.resource_version)
        ):
            return False
        self.absorb(obj)
        return True

    def remember(self, field: str, texts: Iterable[str]) -> None:
        """Keep a field's distinct values: the first ``MAX_VALUES`` of the first ``MAX_FIELDS`` fields."""
        if field not in self.values and len(self.values) >= MAX_FIELDS:
            return
        kept = self.values.setdefault(field, [])
        if len(kept) >= MAX_VALUES:
            return
        for text in texts:
            if text not in kept and len(kept) < MAX_VALUES:
                kept.append(text)

    def written(self, now: float) -> None:
        """The last snapshot is in the cluster."""
        self.checkpoints.update(self.sending_counted)
        self.sending = {}
        self.written_at = now

    def unwritten(self) -> None:
        """The last snapshot's write failed: what it held is pending again."""
        for source, seq in self.sending.items():
            self.pending[source] = min(seq, self.pending.get(source, seq))
        self.sending = {}


class Aggregator:
    """The findings of one detection, in memory, bounded by ``max_findings``."""

    def __init__(
        self,
        detection: str,
        group_by: list[str],
        message: str,
        max_findings: int,
        fields: tuple[str, ...] | None = None,
        shard: str = DEFAULT_SHARD,
    ) -> None:
        self.detection = detection
        self.shard = shard
        self.group_by = group_by
        self.fields = fields  # the row fields a finding records (values, latest rows); None: all
        self.message = message
        self.max_findings = max_findings
        self.findings: dict[str, FindingState] = {}
        self._names: dict[tuple[str, ...], str] = {}  # key values -> finding name (a hash: worth keeping)
        self.dropped = 0  # rows that would have made a finding beyond the cap

    def load(self, obj: dict[str, Any]) -> None:
        """Adopt a finding that exists in the cluster (after a restart): this shard's part, and the rest."""
        status = obj.get("status") or {}
        name = obj["metadata"]["name"]
        finding = self.findings[name] = FindingState(
            name=name,
            key=dict(obj["spec"].get("key") or {}),
            message=obj["spec"].get("message", ""),
            shard=self.shard,
            alerted_count=int(status.get("count") or 0),
            alert="pending" if status.get("alert") == "pending" else "sent" if status.get("alert") else "",
        )
        finding.absorb(obj, own=True)

    def add(self, row: dict[str, Any], source: str, line_start: int, line_end: int, seen: str, events: int = 1) -> str:
        """Count ``events`` for one row; returns 'new', 'updated', 'skipped' (already counted) or 'dropped'."""
        key = {f: _text(row.get(f, "")) for f in self.group_by}
        values = tuple(key.values())
        name = self._names.get(values)
        if name is None:
            if len(self._names) >= 4 * self.max_findings:  # bounded: a flood of keys past the cap
                self._names.clear()
            name = self._names[values] = finding_name(self.detection, key)
        finding = self.findings.get(name)
        if finding is None:
            if len(self.findings) >= self.max_findings:
                self.dropped += 1
                return "dropped"
            finding = self.findings[name] = FindingState(name, key, render_message(self.message, row), shard=self.shard)
            outcome = "new"
        else:
            outcome = "updated"
        if line_end <= finding.checkpoints.get(source, -1):
            return "skipped"  # already in the count written before a restart
        finding.count += events
        finding.first_seen = min(finding.first_seen or seen, seen)
        finding.last_seen = max(finding.last_seen, seen)
        if self.fields is not None:
            row = {k: row[k] for k in self.fields if k in row}
        for k, v in row.items():
            if k != "count":
                finding.remember(k, (_text(t) for t in (v if isinstance(v, list) else [v])))
        finding.recent.appendleft(dict(itertools.islice(row.items(), MAX_FIELDS)))
        if not finding.pending:
            finding.since = time.monotonic()
        finding.pending.setdefault(source, line_start)
        finding.counted[source] = line_end
        return outcome

    def observe(self, obj: dict[str, Any]) -> bool:
        """A write of one of this detection's findings, seen on the watch (FindingState.observe)."""
        finding = self.findings.get(obj["metadata"]["name"])
        return finding is not None and finding.observe(obj)

    def behind(self) -> tuple[int, float]:
        """(findings with counts not yet written, seconds the oldest of those counts has waited)."""
        since = [f.since for f in self.findings.values() if f.dirty or f.sending]
        return len(since), time.monotonic() - min(since) if since else 0.0

    def resume_seq(self, source: str, read_seq: int) -> int:
        """Where to start reading ``source`` again so that no unwritten contribution is lost."""
        held = [d[source] for f in self.findings.values() for d in (f.pending, f.sending) if source in d]
        return min([read_seq, *held])

    def expire(self, ttl_seconds: float, now: float | None = None) -> list[FindingState]:
        """Remove and return findings whose last event is older than the TTL."""
        cutoff = (now or time.time()) - ttl_seconds
        gone = [
            f
            for f in self.findings.values()
            if f.seen_last and _epoch(f.seen_last) < cutoff and not f.dirty and not f.sending
        ]
        for f in gone:
            del self.findings[f.name]
        return gone


def newer(version: str, than: str) -> bool:
    """Whether resourceVersion ``version`` is later than ``than``, compared as Kubernetes 1.35 made
    them comparable (KEP-5504: decimal integers without leading zeros, a longer one is later); a pair
    that does not compare so counts as later when it differs (a stale precondition costs a 409, no more)."""
    if version.isascii() and version.isdecimal() and than.isascii() and than.isdecimal():
        return (len(version), version) > (len(than), than)
    return version != than


def _parts(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The shards' parts of a finding's status; one written before shards existed is the default shard's."""
    if "shards" in status or "retired" in status or not status.get("count"):
        return dict(status.get("shards") or {})
    keys = ("count", "firstSeen", "lastSeen", "checkpoints")
    return {DEFAULT_SHARD: {k: status[k] for k in keys if k in status}}


def _earliest(*times: str) -> str:
    """The earliest of RFC 3339 times, the empty ones left out ('' when all are)."""
    return min((t for t in times if t), default="")


def _row_text(row: dict[str, Any]) -> dict[str, str]:
    return {k: _text(v) for k, v in row.items()}


def _text(value: Any) -> str:
    text = ", ".join(value) if isinstance(value, list) else str(value)
    return text[:MAX_TEXT]


def _epoch(timestamp: str) -> float:
    seconds = epoch_seconds(timestamp)
    return time.time() if seconds is None else seconds
