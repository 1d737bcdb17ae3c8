"""AKS's diagnostic records, the azureBlob source's fields, and how the storage account's refusals are named."""

from __future__ import annotations

import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from pydantic import ValidationError

from auditwatch.api.models import AzureBlobSource
from auditwatch.audit.azure import record_log
from auditwatch.sources.azureblob import Container


def test_a_record_gives_its_audit_event_text_and_nothing_else_does():
    assert record_log({"category": "kube-audit", "properties": {"log": '{"kind":"Event"}'}}) == '{"kind":"Event"}'
    assert record_log({"category": "kube-apiserver", "properties": {"pod": "x"}}) is None
    assert record_log({"properties": {"log": {"kind": "Event"}}}) is None  # not text
    assert record_log(["not", "a", "record"]) is None


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"accountUrl": "ACCOUNT.blob.core.windows.net"}, "accountUrl"),  # no scheme
        ({"accountUrl": "https://a.blob.core.windows.net", "container": "Insights_Logs"}, "container"),
        ({"accountUrl": "https://a.blob.core.windows.net", "settleDelay": "soon"}, "settleDelay"),
        ({"accountUrl": "https://a.blob.core.windows.net", "start": "yesterday"}, "start"),
    ],
)
def test_a_bad_source_names_the_field(fields, bad):
    with pytest.raises(ValidationError) as err:
        AzureBlobSource(**fields)
    assert err.value.errors()[0]["loc"] == (bad,)


def refused(status: int) -> HttpResponseError:
    error = HttpResponseError(message="This request is not authorized to perform this operation.")
    error.status_code = status
    return error


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (ResourceNotFoundError("The specified container does not exist."), "does not exist: is the cluster's"),
        (refused(403), "Storage Blob Data Reader on the container"),
        (ClientAuthenticationError("no token"), "Workload Identity"),
        (refused(500), "HttpResponseError"),
    ],
)
def test_refusals_name_the_container_and_what_to_do(error, says):
    message = Container("https://acct.blob.core.windows.net", "insights-logs-kube-audit").explain(error)
    assert "container insights-logs-kube-audit of https://acct.blob.core.windows.net" in message
    assert says in message
