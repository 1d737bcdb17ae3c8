"""AKS audit events from the storage account a diagnostic setting archives them to, tailed by blob and offset.

An AKS diagnostic setting with the ``kube-audit`` category (``kube-audit-admin``: writes only) and a
storage account destination appends each hour's records to one append blob of the container
``insights-logs-kube-audit``, named for the cluster and the hour::

    resourceId=/SUBSCRIPTIONS/ID/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.CONTAINERSERVICE/MANAGEDCLUSTERS/NAME/
        y=2026/m=12/d=04/h=08/m=00/PT1H.json

one diagnostic record a line, the audit Event in ``properties.log`` (audit/azure.py). The tail reads the
blobs in name order, which is hour order, each from where it stopped to its end, and moves to the next
blob once one exists and the current one has not grown for ``settleDelay``; what is appended to a blob
after that is counted (``lateBytes``), not read. A position is a blob and an offset in it (a line start,
after a chunk). Append blobs only grow, so the bytes after a position are the same on every read: ``seq``
(the audit lines yielded) means the same after a restart, as the findings' exactly-once protocol needs.
Minutes behind (Azure Monitor writes the blobs in batches), and the cheapest path for many clusters.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from auditwatch.api.models import AzureBlobSource, AzureBlobStatus
from auditwatch.audit.azure import record_log
from auditwatch.audit.envelopes import message_line
from auditwatch.sources import Chunk
from auditwatch.sources.marks import MarkedTail
from auditwatch.times import parse_duration, point_in_time

CHUNK_BYTES = 4 << 20  # a blob is read in ranges of about this size
MAX_RANGE = 64 << 20  # a range grows to this to hold one whole line
HOUR = re.compile(r"y=(\d{4})/m=(\d\d)/d=(\d\d)/h=(\d\d)/m=\d\d/PT1H\.json$")


@dataclass(frozen=True)
class BlobPosition:
    """``offset`` bytes of ``blob`` read (a line start); "" before the first blob."""

    blob: str
    offset: int
    seq: int

    def status(self) -> dict[str, Any]:
        """The AzureBlobStatus fields of this position."""
        return {"blob": self.blob, "offset": self.offset}

    @classmethod
    def saved(cls, status: AzureBlobStatus | None, seq: int) -> BlobPosition | None:
        """The position a detection's status recorded for an Azure blob source, if any."""
        return cls(status.blob, status.offset, seq) if status is not None and status.blob else None


@dataclass(frozen=True)
class Blob:
    name: str
    size: int
    modified: float  # seconds since the epoch


class Container:
    """One container's list and read calls, counted, whoever makes them."""

    def __init__(self, account_url: str, name: str) -> None:
        self.account_url, self.name = account_url.rstrip("/"), name
        self.calls = 0
        self._client: Any = None

    async def blobs(self, prefix: str) -> list[Blob]:
        """The hourly audit blobs under ``prefix``, in name (hour) order."""
        found = []
        async for item in self._call().list_blobs(name_starts_with=prefix or None):
            if HOUR.search(item.name):
                found.append(Blob(item.name, item.size, item.last_modified.timestamp()))
        return sorted(found, key=lambda b: b.name)

    async def lines(self, blob: Blob, offset: int) -> bytes:
        """Whole lines of ``blob`` from ``offset``: a range of CHUNK_BYTES, grown to hold at least one line,
        cut after its last newline; b"" while the one line there is still being written; a line longer
        than MAX_RANGE comes as its first MAX_RANGE bytes, without a newline."""
        length = CHUNK_BYTES
        while True:
            data = await self._read(blob.name, offset, min(length, blob.size - offset))
            if cut := data.rfind(b"\n") + 1:
                return data[:cut]
            if length >= MAX_RANGE:
                return data
            if offset + len(data) >= blob.size:
                return b""
            length *= 4

    async def _read(self, blob: str, offset: int, length: int) -> bytes:
        download = await self._call().get_blob_client(blob).download_blob(offset=offset, length=length)
        data: bytes = await download.readall()
        return data

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def _call(self) -> Any:
        self.calls += 1
        if self._client is None:
            self._client = _client(self.account_url, self.name)
        return self._client

    def explain(self, exc: Exception) -> str:
        """What a failed call means, and what to do about it."""
        from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError

        where = f"container {self.name} of {self.account_url}"
        if isinstance(exc, ResourceNotFoundError):
            return (
                f"{where} does not exist: is the cluster's diagnostic setting archiving kube-audit to this "
                f"storage account? (README, On AKS)"
            )
        if isinstance(exc, ClientAuthenticationError) or (
            isinstance(exc, HttpResponseError) and exc.status_code == 403
        ):
            return (
                f"the operator's Azure identity may not read {where} (assign it Storage Blob Data Reader on "
                f"the container; with Workload Identity, is the ServiceAccount federated?): {exc.message}"
            )
        return f"{where}: {type(exc).__name__}: {exc}"


def _client(account_url: str, container: str) -> Any:
    """A container client: AZURE_STORAGE_CONNECTION_STRING when set (an account key, Azurite), else
    DefaultAzureCredential (Workload Identity on AKS)."""
    from azure.storage.blob.aio import ContainerClient  # imported when an Azure source is first read

    if connection := os.environ.get("AZURE_STORAGE_CONNECTION_STRING"):
        return ContainerClient.from_connection_string(connection, container)
    from azure.identity.aio import DefaultAzureCredential

    return ContainerClient(account_url, container, credential=DefaultAzureCredential())


class BlobTail(MarkedTail[BlobPosition]):
    """The audit events of a container's hourly blobs under ``prefix``, from ``start``, forever."""

    def __init__(
        self, container: Container, spec: AzureBlobSource, start: BlobPosition | None, clock: Any = time.time
    ) -> None:
        super().__init__(start or BlobPosition("", 0, 0))
        self.container, self.prefix, self.clock = container, spec.prefix, clock
        self.poll, self.settle = parse_duration(spec.pollInterval), parse_duration(spec.settleDelay)
        self.first_hour = hour_start(point_in_time(spec.start, round(clock() * 1000)) / 1000)
        self.ready, self.error = False, ""
        self.long_lines = self.lag_bytes = 0
        self.late_bytes = self.dropped = 0
        self.newest = ""
        self.idle_chunks = False
        self._done: dict[str, int] = {}  # blobs moved past -> their size then (what grows later is late)

    @property
    def origin(self) -> str:
        return f"{self.container.account_url}/{self.container.name}/{self.at.blob}"

    def details(self) -> dict[str, Any]:
        """The AzureBlobStatus fields that describe this read besides its position."""
        return {
            "lagBytes": self.lag_bytes,
            "newestBlob": self.newest,
            "lateBytes": self.late_bytes,
            "dropped": self.dropped,
            "apiCalls": self.container.calls,
        }

    async def chunks(self) -> Any:
        failures = 0
        while True:
            try:
                chunk, more = await self._step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the SDK's errors and the network's: tried again, named meanwhile
                self.ready, self.error = False, self.container.explain(exc)
                failures += 1
                await asyncio.sleep(min(60.0, self.poll * 2**failures))
                continue
            self.ready, self.error, failures = True, "", 0
            if chunk is not None:
                yield chunk
            elif not more:
                if self.idle_chunks:
                    yield Chunk(b"", self.at.seq, self.origin)
                await asyncio.sleep(self.poll)

    async def _step(self) -> tuple[Chunk | None, bool]:
        """The next chunk of the current blob, or a move to the next blob (more: go on at once)."""
        blobs = await self.container.blobs(self.prefix)
        self.newest = blobs[-1].name if blobs else self.newest
        self._count_late(blobs)
        at = self.at
        later = [b for b in blobs if b.name > at.blob and (at.blob or hour_of(b.name) >= self.first_hour)]
        current = next((b for b in blobs if b.name == at.blob), None)
        self.lag_bytes = sum(b.size for b in later) + (current.size - at.offset if current else 0)
        if current is not None and current.size > at.offset:
            chunk = await self._read(current)
            self.lag_bytes -= self.at.offset - at.offset
            return chunk, chunk is not None
        if later and (current is None or self.clock() - current.modified >= self.settle):
            if current is not None:
                self._done[current.name] = current.size
            self._move(BlobPosition(later[0].name, 0, at.seq))
            return None, True
        return None, False

    async def _read(self, blob: Blob) -> Chunk | None:
        """Whole lines of ``blob`` from the position, as audit lines; None while its last line is unwritten."""
        at = self.at
        data = await self.container.lines(blob, at.offset)
        if not data:
            return None  # a line being written: read it whole next time
        if not data.endswith(b"\n"):
            self.long_lines += 1  # over MAX_RANGE: skipped
        lines, dropped = audit_lines(data)
        self.dropped += dropped
        origin = self.origin
        self._move(BlobPosition(blob.name, at.offset + len(data), at.seq + len(lines)))
        return Chunk(lines, at.seq, origin)

    def _count_late(self, blobs: list[Blob]) -> None:
        for blob in blobs:
            done = self._done.get(blob.name)
            if done is not None and blob.size > done:
                self.late_bytes += blob.size - done
                self._done[blob.name] = blob.size
        if len(self._done) > 48:  # two days of hours
            for name in sorted(self._done)[:-48]:
                del self._done[name]


def audit_lines(data: bytes) -> tuple[bytes, int]:
    """The audit Event lines of whole record lines, and how many lines were no audit record."""
    out, dropped = [], 0
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            log = record_log(orjson.loads(line))
        except orjson.JSONDecodeError:
            log = None
        if log is None:
            dropped += 1
        else:
            out.append(message_line(log))
    return b"".join(out), dropped


def hour_of(name: str) -> float:
    """The hour a blob's name is for (seconds since the epoch)."""
    found = HOUR.search(name)
    assert found is not None  # Container.blobs lists only these
    y, m, d, h = map(int, found.groups())
    return datetime(y, m, d, h, tzinfo=UTC).timestamp()


def hour_start(seconds: float) -> float:
    return seconds - seconds % 3600
