"""``s3://BUCKET/PREFIX`` inputs of ``auditwatch hunt``: the objects under a prefix, fetched one GET each,
those outside the hunt's time range never fetched.

What each object holds is found by content, as ``scan`` finds it (audit/envelopes.py), so every layout
users archive in is read: Firehose's (``PREFIX/YYYY/MM/DD/HH/...``; CloudWatch subscription payloads,
gzip members concatenated, or lines where a processor Lambda unpacked them), CloudWatch export tasks'
(``PREFIX/<task>/<stream>/000000.gz``, lines ``timestamp message``), rotated ``audit-*.log.gz``.

Pruning by key: an object under an hour path (``YYYY/MM/DD/HH/``, or Firehose's Hive style
``year=YYYY/month=MM/day=DD/hour=HH/``) is named for the hour its records reached Firehose (UTC), so its
events happened before that hour ended, and at most ``LATE`` before it began (CloudWatch delivers in
seconds; Firehose buffers at most 15 minutes). Objects without an hour path are all read; the range
then keeps their events by time.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from auditwatch.offline.inputs import InputError

S3 = "s3://"
LATE = 3600.0  # seconds an event may precede the hour its Firehose object is named for
HOUR_PATH = re.compile(r"(?:^|/)(?:year=)?(\d{4})/(?:month=)?(\d\d)/(?:day=)?(\d\d)/(?:hour=)?(\d\d)/")


@dataclass(frozen=True)
class S3Object:
    key: str
    size: int


@dataclass
class Listing:
    """The objects under a prefix, and those the range let through."""

    url: str
    objects: list[S3Object]
    kept: list[S3Object]


def split_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of ``s3://bucket/prefix``; InputError when there is no bucket."""
    bucket, _, prefix = url.removeprefix(S3).partition("/")
    if not bucket:
        raise InputError(f"{url}: expected s3://BUCKET/PREFIX")
    return bucket, prefix


def in_range(key: str, since: float | None, until: float | None) -> bool:
    """Whether the object ``key`` may hold events in ``[since, until)`` (epoch seconds; None: open)."""
    found = HOUR_PATH.search(key)
    if found is None:
        return True
    try:
        year, month, day, hour_of_day = map(int, found.groups())
        hour = datetime(year, month, day, hour_of_day, tzinfo=UTC).timestamp()
    except ValueError:  # 2026/13/45/99: no date after all
        return True
    return (since is None or hour + 3600 > since) and (until is None or hour - LATE < until)


class Bucket:
    """One bucket, read through boto3 (credentials and endpoint from the standard AWS chain,
    ``AWS_ENDPOINT_URL`` among them)."""

    def __init__(self, url: str) -> None:
        import boto3  # imported for an s3:// input only

        self.url = url
        self.name, self.prefix = split_url(url)
        self.client = boto3.session.Session().client("s3")
        self.gets = 0

    def list(self, since: float | None, until: float | None) -> Listing:
        objects = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=self.prefix):
                objects += [S3Object(o["Key"], o["Size"]) for o in page.get("Contents", ()) if o["Size"]]
        except Exception as exc:  # botocore's errors: named, with the code AWS gave
            raise InputError(f"{self.url}: cannot list: {_reason(exc)}") from None
        kept = [o for o in objects if in_range(o.key[len(self.prefix) :], since, until)]
        return Listing(self.url, objects, kept)

    def fetch(self, obj: S3Object, target: str) -> None:
        """The object's bytes into the file ``target``, streamed: one GET."""
        self.gets += 1
        try:
            body = self.client.get_object(Bucket=self.name, Key=obj.key)["Body"]
            with open(target, "wb") as out:
                shutil.copyfileobj(body, out, 1 << 20)
        except Exception as exc:
            raise InputError(f"s3://{self.name}/{obj.key}: cannot read: {_reason(exc)}") from None


def objects(
    url: str, since: float | None, until: float | None, workdir: str, notes: TextIO | None = sys.stderr
) -> Iterator[tuple[str, str]]:
    """Each object of ``url`` the range lets through, fetched into ``workdir``: its local path (which the
    caller may delete once read) and its ``s3://`` address."""
    bucket = Bucket(url)
    listing = bucket.list(since, until)
    total = sum(o.size for o in listing.kept)
    if notes is not None:
        skipped = len(listing.objects) - len(listing.kept)
        notes.write(
            f"auditwatch: {url}: {len(listing.kept):,} objects ({total / 1e6:,.1f} MB) to read"
            + (f", {skipped:,} outside the time range not read\n" if skipped else "\n")
        )
    done = 0
    for number, obj in enumerate(listing.kept):
        target = os.path.join(workdir, f"s3-{number:06d}-{os.path.basename(obj.key) or 'object'}")
        bucket.fetch(obj, target)
        done += obj.size
        if notes is not None and notes.isatty():
            notes.write(f"\r{url}: {number + 1:,} of {len(listing.kept):,} objects, {done / max(1, total):.0%}")
            notes.flush()
        yield target, f"{S3}{bucket.name}/{obj.key}"
    if notes is not None and notes.isatty():
        notes.write("\n")


def _reason(exc: Exception) -> str:
    response: Any = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        error = response["Error"]
        return f"{error.get('Code', '?')}: {error.get('Message') or exc}"
    return f"{type(exc).__name__}: {exc}"
