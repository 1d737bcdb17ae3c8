"""What a Pub/Sub message is read as, the key a repeat is known by, and how refusals are named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.api_core import exceptions as gapi
from pydantic import ValidationError

from auditwatch.api.models import PubSubSource
from auditwatch.sources.pubsub import Puller, event_of
from factory import event
from gcp import gke_entry


def test_a_gke_entry_is_its_audit_event_known_by_insert_id_and_time():
    original = event(object_ref={"resource": "pods", "apiVersion": "v1", "namespace": "default"})
    entry = gke_entry(original)
    mapped, key = event_of(json.dumps(entry).encode())
    assert key == f"entry:{original['auditID']}@{original['stageTimestamp']}"
    assert mapped["user"] == {"username": "system:anonymous", "groups": ["system:unauthenticated"]}
    assert (mapped["verb"], mapped["sourceIPs"], mapped["userAgent"]) == (
        "list",
        ["203.0.113.7"],
        original["userAgent"],
    )
    assert mapped["objectRef"] == {"resource": "pods", "apiGroup": "", "apiVersion": "v1", "namespace": "default"}
    assert mapped["responseStatus"]["code"] == 403


def test_an_audit_event_published_as_it_is_is_read_as_it_is():
    original = event()
    assert event_of(json.dumps(original).encode()) == (original, f"event:{original['auditID']}@ResponseComplete")
    without_id = {k: v for k, v in original.items() if k != "auditID"}
    assert event_of(json.dumps(without_id).encode()) == (without_id, "")  # known by its message ID


@pytest.mark.parametrize(
    ("data", "says"),
    [(b"{not json", "not JSON"), (b'{"level": "info"}', "neither a GKE audit log entry"), (b"[1]", "neither")],
)
def test_other_messages_are_refused_with_the_reason(data, says):
    with pytest.raises(ValueError, match=says):
        event_of(data)


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (gapi.NotFound("Resource not found"), "does not exist: create it"),
        (gapi.PermissionDenied("User not authorized"), "roles/pubsub.subscriber on the subscription"),
        (gapi.Unauthenticated("bad token"), "no credentials"),
    ],
)
def test_refusals_name_the_subscription_and_what_to_do(tmp_path: Path, error, says):
    puller = Puller("my-project", "gke-audit", tmp_path)
    message = puller._explain(error)
    assert says in message
    assert "projects/my-project/subscriptions/gke-audit" in message or str(puller.spool.file) in message


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"project": "P", "subscription": "gke-audit"}, "project"),
        ({"project": "my-project", "subscription": "projects/my-project/subscriptions/x"}, "subscription"),
        ({"project": "my-project", "subscription": "ab"}, "subscription"),
        ({"project": "my-project", "subscription": "gke-audit", "maxMessages": 5000}, "maxMessages"),
    ],
)
def test_a_bad_source_names_the_field(fields, bad):
    with pytest.raises(ValidationError) as err:
        PubSubSource(**fields)
    assert err.value.errors()[0]["loc"] == (bad,)


async def test_a_spool_that_cannot_be_written_is_named_and_its_keys_forgotten(tmp_path: Path, monkeypatch):
    puller = Puller("my-project", "gke-audit", tmp_path)

    def full(line: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(puller.spool, "append", full)
    entry = json.dumps(gke_entry(event())).encode()
    received = [_Received(entry)]
    with pytest.raises(Exception) as failed:
        await puller._keep(received, 0.0)
    assert (
        puller._explain(failed.value)
        == f"the spool {puller.spool.file} cannot be written: [Errno 28] No space left on device"
    )
    assert not puller._recent.seen(event_of(entry)[1])  # not kept: when it comes again, it is new


class _Received:
    """A pulled message as the client gives it: what _keep reads of one."""

    def __init__(self, data: bytes) -> None:
        from datetime import UTC, datetime
        from types import SimpleNamespace

        self.ack_id, self.delivery_attempt = "ack-1", 0
        self.message = SimpleNamespace(data=data, message_id="1", publish_time=datetime.now(UTC))
