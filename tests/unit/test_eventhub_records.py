"""What an Event Hubs event is read as, how the namespace and credentials are chosen, and how refusals and
bad specs are named."""

from __future__ import annotations

import json

import pytest
from aiokafka import errors
from pydantic import ValidationError

from auditwatch.api.models import EventHubSource, Source
from auditwatch.audit.azure import hub_events
from auditwatch.sources.eventhub import credentials, host_of, refusal
from factory import event
from kafka import hub_body


def test_diagnostic_records_are_their_audit_events_and_other_records_are_named():
    one, two = event(uri="/api/v1/pods?n=1"), event(uri="/api/v1/pods?n=2")
    body = json.loads(hub_body([one, two]))
    body["records"].append({"category": "kube-apiserver", "properties": {"log": "I1204 10:00:00 started"}})
    body["records"].append({"category": "kube-audit"})
    found = list(hub_events(json.dumps(body).encode()))
    assert found[:2] == [(one, ""), (two, "")]
    assert found[2] == (None, "record 2 (category 'kube-apiserver') is not an audit Event: stream only "
                              "kube-audit(-admin)")  # fmt: skip
    assert found[3] == (None, "record 3 has no properties.log")


def test_an_audit_event_sent_as_it_is_is_read_and_anything_else_named():
    original = event()
    assert list(hub_events(json.dumps(original).encode())) == [(original, "")]
    assert next(hub_events(b"{not json"))[1].startswith("not JSON")
    assert list(hub_events(b'{"level": "info"}')) == [
        (None, 'neither diagnostic records ({"records": [...]}) nor an audit Event')
    ]


def test_a_namespace_name_is_azures_host_and_a_host_name_stays():
    assert host_of("aks-audit") == "aks-audit.servicebus.windows.net"
    assert host_of("aks-audit.servicebus.chinacloudapi.cn") == "aks-audit.servicebus.chinacloudapi.cn"


def test_credentials_a_standing_in_broker_a_connection_string_or_workload_identity(monkeypatch):
    monkeypatch.setenv("EVENTHUB_KAFKA_BROKER", "127.0.0.1:9092")
    assert credentials("ns.servicebus.windows.net") == {"security_protocol": "PLAINTEXT"}
    monkeypatch.delenv("EVENTHUB_KAFKA_BROKER")
    monkeypatch.setenv("EVENTHUB_CONNECTION_STRING", "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKey=k")
    plain = credentials("ns.servicebus.windows.net")
    assert (plain["security_protocol"], plain["sasl_mechanism"], plain["sasl_plain_username"]) == (
        "SASL_SSL",
        "PLAIN",
        "$ConnectionString",
    )
    monkeypatch.delenv("EVENTHUB_CONNECTION_STRING")
    entra = credentials("ns.servicebus.windows.net")
    assert entra["sasl_mechanism"] == "OAUTHBEARER"
    assert entra["sasl_oauth_token_provider"]._scope == "https://ns.servicebus.windows.net/.default"


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (errors.TopicAuthorizationFailedError(), "Azure Event Hubs Data Receiver role"),
        (errors.GroupAuthorizationFailedError(), "Azure Event Hubs Data Receiver role"),
        (errors.UnknownTopicOrPartitionError(), "does not exist"),
        (errors.KafkaConnectionError("refused"), "the Kafka endpoint ns.servicebus.windows.net:9093 does not answer"),
    ],
)
def test_refusals_name_the_hub_and_what_to_do(error, says):
    message = refusal("ns.servicebus.windows.net", "kube-audit", "auditwatch", error, "ns.servicebus.windows.net:9093")
    assert message.startswith("event hub kube-audit in ns.servicebus.windows.net (consumer group auditwatch)")
    assert says in message


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"namespace": "ab", "hub": "kube-audit"}, "namespace"),
        ({"namespace": "aks-audit", "hub": "-kube-audit"}, "hub"),
        ({"namespace": "aks-audit", "hub": "kube-audit", "start": "now"}, "start"),
        ({"namespace": "aks-audit", "hub": "kube-audit", "maxRecords": 0}, "maxRecords"),
    ],
)
def test_a_bad_eventhub_source_names_its_field(fields, bad):
    with pytest.raises(ValidationError) as refused:
        EventHubSource(**fields)
    assert refused.value.errors()[0]["loc"] == (bad,)


def test_an_eventhub_source_is_its_own_kind_with_defaults():
    source = Source(name="aks", eventHub={"namespace": "aks-audit", "hub": "kube-audit"})
    assert source.kind == "eventHub"
    assert (source.eventHub.consumerGroup, source.eventHub.start, source.eventHub.maxRecords) == (
        "auditwatch",
        "latest",
        500,
    )


class _Record:
    """A fetched record as aiokafka gives it: what the reader reads of one."""

    def __init__(self, offset: int, value: bytes) -> None:
        self.offset, self.value, self.timestamp = offset, value, 1_796_000_000_000


async def test_the_spool_lines_carry_the_offsets_after_them_even_with_nothing_new(tmp_path, monkeypatch):
    from aiokafka import TopicPartition

    from auditwatch.sources import eventhub
    from auditwatch.sources.eventhub import HubReader

    monkeypatch.setattr(eventhub, "LINE_BYTES", 1)  # a line after every record
    reader = HubReader("aks-audit", "kube-audit", "auditwatch", tmp_path)
    one, two = event(uri="/api/v1/pods?n=1"), event(uri="/api/v1/pods?n=2")
    p0, p1 = TopicPartition("kube-audit", 0), TopicPartition("kube-audit", 1)
    offsets = await reader._keep({p0: [_Record(7, hub_body([one]))], p1: [_Record(3, hub_body([two]))]}, 0.0)
    assert offsets == {0: 8, 1: 4}
    again = await reader._keep({p1: [_Record(4, hub_body([two, one]))]}, 0.0)  # both spooled before
    assert again == {1: 5} and reader.duplicates == 2
    lines = [json.loads(line) for line in reader.spool.file.read_bytes().splitlines()]
    assert [len(line["items"]) for line in lines] == [1, 1, 0]
    assert [line["consumed"]["offsets"] for line in lines] == [{"0": 8}, {"0": 8, "1": 4}, {"1": 5}]

    restarted = HubReader("aks-audit", "kube-audit", "auditwatch", tmp_path)  # learns both again from the spool
    for line in lines:
        restarted._remember(line)
    assert restarted._spooled == {0: 8, 1: 5}
    assert restarted._recent.seen(f"event:{one['auditID']}@ResponseComplete")
