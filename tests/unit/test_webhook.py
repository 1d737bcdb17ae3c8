"""The audit webhook server: only the API server may feed it, answers that help its batch backend, and
one chunk per batch per subscriber. Real TLS on loopback, certificates made as `auditwatch cluster certs`
makes them."""

import asyncio
import json
import os
import ssl

import aiohttp
import pytest

from auditwatch.devcluster.certs import make_client_cert, make_webhook_certs
from auditwatch.devcluster.cluster import free_port
from auditwatch.settings import Settings
from auditwatch.sources.webhook import WebhookServer


def batch(*ids, stage="ResponseComplete"):
    return json.dumps({"kind": "EventList", "items": [{"auditID": i, "stage": stage} for i in ids]}).encode()


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_webhook_certs(tmp_path_factory.mktemp("certs"), ["127.0.0.1"])


@pytest.fixture(scope="module")
def strangers(tmp_path_factory):
    """A CA of someone else's, and its client certificate for the right name."""
    return make_webhook_certs(tmp_path_factory.mktemp("other"), ["127.0.0.1"])


async def serve(**settings):
    srv = WebhookServer("127.0.0.1", free_port(), Settings(**settings))
    await srv.start()
    return srv


@pytest.fixture
async def server():
    srv = await serve(webhook_insecure=True)
    yield srv
    await srv.stop()


@pytest.fixture
async def mtls(certs):
    srv = await serve(webhook_tls_cert=str(certs.server_cert), webhook_tls_key=str(certs.server_key),
                      webhook_client_ca=str(certs.ca), webhook_client_names=("kube-apiserver",))  # fmt: skip
    yield srv
    await srv.stop()


def client_context(certs, cert=None, key=None):
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    if cert:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


async def post(srv, path, body, ssl_context=None, headers=None):
    scheme = "https" if ssl_context else "http"
    url = f"{scheme}://127.0.0.1:{srv.port}{path}"
    async with aiohttp.ClientSession() as s, s.post(url, data=body, ssl=ssl_context or False, headers=headers) as r:
        return r.status, r.headers.get("Retry-After"), await r.text()


async def test_a_batch_reaches_every_subscriber_of_its_path_as_one_line(server):
    a, b, other = server.subscribe("/audit"), server.subscribe("/audit"), server.subscribe("/other")
    body = json.dumps({"kind": "EventList", "items": [{"auditID": "1"}, {"auditID": "2"}]}, indent=2).encode()
    assert (await post(server, "/audit", body))[0] == 200
    chunk_a = await asyncio.wait_for(anext(a.chunks()), 1)
    chunk_b = await asyncio.wait_for(anext(b.chunks()), 1)
    assert chunk_a is chunk_b and chunk_a.data.count(b"\n") == 1 and chunk_a.data.endswith(b"\n")
    assert json.loads(chunk_a.data)["items"][1]["auditID"] == "2"
    assert chunk_a.origin == "webhook:/audit" and other.queue.empty()


async def test_seq_only_grows(server):
    feed = server.subscribe("/audit")
    for i in range(3):
        await post(server, "/audit", batch(str(i)))
    seqs = [(await anext(feed.chunks())).seq for _ in range(3)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3


async def test_unknown_paths_get_404_and_a_full_queue_503_with_retry_after(server):
    assert (await post(server, "/nobody", batch("x")))[0] == 404
    server.queue_batches = 1
    server.subscribe("/audit")
    assert (await post(server, "/audit", batch("a")))[0] == 200
    status, retry, _ = await post(server, "/audit", batch("b"))
    assert (status, retry) == (503, "1")  # kube-apiserver's batch backend retries
    assert server.answers == {404: 1, 200: 1, 503: 1}


async def test_what_is_not_an_event_list_gets_400_with_the_reason_and_oversize_413(server):
    feed = server.subscribe("/audit")
    for body, reason in ((b"{nope", "invalid JSON"), (b"[]", "kind EventList"),
                         (b'{"kind": "EventList", "items": 5}', "items: expected a list")):  # fmt: skip
        status, _, text = await post(server, "/audit", body)
        assert status == 400 and reason in text
    small = WebhookServer("127.0.0.1", free_port(), Settings(webhook_insecure=True))
    small.max_batch_bytes = 1024  # the application reads it when the server starts
    await small.start()
    small.subscribe("/audit")
    assert (await post(small, "/audit", batch(*map(str, range(200)))))[0] == 413
    await small.stop()
    assert feed.queue.empty()


async def test_repeated_events_are_dropped_and_counted(server):
    feed = server.subscribe("/audit")
    assert (await post(server, "/audit", batch("a", "b")))[0] == 200
    assert (await post(server, "/audit", batch("a", "b")))[0] == 200  # a retry of a batch that got through
    assert (await post(server, "/audit", batch("b", "c")))[0] == 200
    assert (await post(server, "/audit", batch("c", stage="RequestReceived")))[0] == 200  # another stage
    ids = []
    while not feed.queue.empty():
        ids.append([(i["auditID"], i["stage"][:3]) for i in json.loads(feed.queue.get_nowait().data)["items"]])
    assert ids == [[("a", "Res"), ("b", "Res")], [("c", "Res")], [("c", "Req")]] and server.repeats == 3


async def test_only_the_api_servers_client_certificate_gets_in(mtls, certs, strangers):
    feed = mtls.subscribe("/audit")
    ok = client_context(certs, certs.client_cert, certs.client_key)
    assert (await post(mtls, "/audit", batch("1"), ok))[0] == 200
    assert (await post(mtls, "/audit", batch("2"), client_context(certs)))[0] == 401  # no certificate
    other_name = make_client_cert(certs, "mallory")
    assert (await post(mtls, "/audit", batch("3"), client_context(certs, *other_name)))[0] == 403
    for cert in (make_client_cert(certs, "kube-apiserver", days=-1), (strangers.client_cert, strangers.client_key)):
        with pytest.raises(aiohttp.ClientError):  # expired, or signed by another CA: the handshake fails
            await post(mtls, "/audit", batch("4"), client_context(certs, *cert))
    assert feed.queue.qsize() == 1 and mtls.answers == {200: 1, 401: 1, 403: 1}


async def test_a_bearer_token_from_a_file_compared_and_reloaded(certs, tmp_path):
    token = tmp_path / "token"
    token.write_text("first-token\n")
    srv = await serve(webhook_tls_cert=str(certs.server_cert), webhook_tls_key=str(certs.server_key),
                      webhook_token_file=str(token))  # fmt: skip
    srv.subscribe("/audit")
    ctx = client_context(certs)
    try:
        assert (await post(srv, "/audit", batch("1"), ctx, {"Authorization": "Bearer first-token"}))[0] == 200
        assert (await post(srv, "/audit", batch("2"), ctx, {"Authorization": "Bearer wrong"}))[0] == 401
        assert (await post(srv, "/audit", batch("3"), ctx))[0] == 401
        token.write_text("second-token\n")  # the Secret was renewed
        os.utime(token, (0, 12345))  # a new mtime even within the clock's tick
        srv.reload()
        assert (await post(srv, "/audit", batch("4"), ctx, {"Authorization": "Bearer first-token"}))[0] == 401
        assert (await post(srv, "/audit", batch("5"), ctx, {"Authorization": "Bearer second-token"}))[0] == 200
    finally:
        await srv.stop()


def test_without_a_way_to_authenticate_the_server_stays_off():
    assert Settings(geoip_db=None).webhook_address is None
    assert "no way to authenticate the API server" in Settings().webhook_off
    assert Settings(webhook_token_file="/t").webhook_address == ("0.0.0.0", 8081)
    with pytest.raises(ValueError, match="webhook_client_ca needs TLS"):
        Settings(webhook_client_ca="/ca")
