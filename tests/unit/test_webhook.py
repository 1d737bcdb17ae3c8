"""The audit webhook server: only the API server may feed it, answers that help its batch backend, and
what it acknowledges is in its spool, read by each subscriber from its own position. Real TLS on
loopback, certificates made as `auditwatch cluster certs` makes them."""

import asyncio
import json
import os
import ssl

import aiohttp
import pytest

from auditwatch.api.settings import Settings
from auditwatch.devcluster.certs import make_client_cert, make_webhook_certs
from auditwatch.devcluster.cluster import free_port
from auditwatch.sources.spool import Spool
from auditwatch.sources.webhook import WebhookServer
from factory import checkpoint


def batch(*ids, stage="ResponseComplete"):
    return json.dumps({"kind": "EventList", "items": [{"auditID": i, "stage": stage} for i in ids]}).encode()


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_webhook_certs(tmp_path_factory.mktemp("certs"), ["127.0.0.1"])


@pytest.fixture(scope="module")
def strangers(tmp_path_factory):
    """A CA of someone else's, and its client certificate for the right name."""
    return make_webhook_certs(tmp_path_factory.mktemp("other"), ["127.0.0.1"])


async def serve(spool, **settings):
    srv = WebhookServer("127.0.0.1", free_port(), Settings(webhook_spool=str(spool), **settings))
    await srv.start()
    return srv


@pytest.fixture
async def server(tmp_path):
    srv = await serve(tmp_path / "spool", webhook_insecure=True, webhook_startup_seconds=0)
    yield srv
    await srv.stop()


@pytest.fixture
async def mtls(certs, tmp_path):
    srv = await serve(tmp_path / "spool", webhook_tls_cert=str(certs.server_cert),
                      webhook_tls_key=str(certs.server_key), webhook_client_ca=str(certs.ca),
                      webhook_client_names=("kube-apiserver",))  # fmt: skip
    yield srv
    await srv.stop()


def spooled(srv, path="/audit"):
    """The batches in a path's spool, as event ids."""
    file = srv.spool_file(path)
    lines = file.read_bytes().splitlines() if file.exists() else []
    return [[i["auditID"] for i in json.loads(line)["items"]] for line in lines]


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
    a, b = server.subscribe("/audit"), server.subscribe("/audit")
    server.subscribe("/other")
    body = json.dumps({"kind": "EventList", "items": [{"auditID": "1"}, {"auditID": "2"}]}, indent=2).encode()
    assert (await post(server, "/audit", body))[0] == 200
    chunk_a = await asyncio.wait_for(anext(a.chunks()), 2)
    chunk_b = await asyncio.wait_for(anext(b.chunks()), 2)
    assert chunk_a == chunk_b and chunk_a.data.count(b"\n") == 1 and chunk_a.data.endswith(b"\n")
    assert json.loads(chunk_a.data)["items"][1]["auditID"] == "2"
    assert chunk_a.origin == "webhook:/audit" and spooled(server, "/other") == []


async def test_what_was_acknowledged_is_read_after_a_restart_from_the_saved_position(server, tmp_path):
    first = server.subscribe("/audit", poll_seconds=0.01)
    chunks = first.chunks()
    assert (await post(server, "/audit", batch("a")))[0] == 200
    chunk = await asyncio.wait_for(anext(chunks), 2)
    position = checkpoint(first, chunk.seq + len(chunk.data))
    await chunks.aclose()
    await server.stop()  # the operator goes away; batches the API server had sent are in the spool
    again = await serve(tmp_path / "spool", webhook_insecure=True)
    try:
        resumed = again.subscribe("/audit", start=position, poll_seconds=0.01)
        assert (await post(again, "/audit", batch("b")))[0] == 200
        assert (await post(again, "/audit", batch("a")))[0] == 200  # a retry of a batch the old one took
        chunk = await asyncio.wait_for(anext(resumed.chunks()), 2)
        assert [i["auditID"] for i in json.loads(chunk.data)["items"]] == ["b"] and again.repeats == 1
        assert chunk.seq == position.seq  # the seq runs on: findings' checkpoints stay comparable
    finally:
        await again.stop()


async def test_a_path_no_detection_reads_gets_503_while_the_operator_starts_then_404(tmp_path):
    """kube-apiserver drops a batch answered 404 and sends one answered 503 again: a replica that has
    just started (a rolling update) must not lose the batches sent before its detections subscribe."""
    srv = await serve(tmp_path / "spool", webhook_insecure=True, webhook_startup_seconds=0.5)
    try:
        status, retry, text = await post(srv, "/audit", batch("a"))
        assert (status, retry) == (503, "1") and "no detection reads audit batches at /audit yet" in text
        srv.subscribe("/audit")
        assert (await post(srv, "/audit", batch("a")))[0] == 200
        await asyncio.sleep(0.5)
        assert (await post(srv, "/nobody", batch("x")))[0] == 404
    finally:
        await srv.stop()


async def test_unknown_paths_get_404_and_a_spool_that_cannot_be_written_503(server):
    assert (await post(server, "/nobody", batch("x")))[0] == 404
    server.subscribe("/audit")
    server.spool_file("/audit").parent.parent.mkdir(parents=True, exist_ok=True)
    server.spool_file("/audit").parent.write_text("not a directory")  # as a full or broken disk would
    status, retry, _ = await post(server, "/audit", batch("b"))
    assert (status, retry) == (503, "1")  # kube-apiserver's batch backend keeps it and retries
    server.spool_file("/audit").parent.unlink()
    assert (await post(server, "/audit", batch("b")))[0] == 200  # not taken for a repeat: it was never kept
    assert server.answers == {404: 1, 503: 1, 200: 1} and spooled(server) == [["b"]]


async def test_what_is_not_an_event_list_gets_400_with_the_reason_and_oversize_413(server, tmp_path):
    server.subscribe("/audit")
    for body, reason in ((b"{nope", "invalid JSON"), (b"[]", "kind EventList"),
                         (b'{"kind": "EventList", "items": 5}', "items: expected a list")):  # fmt: skip
        status, _, text = await post(server, "/audit", body)
        assert status == 400 and reason in text
    small = WebhookServer("127.0.0.1", free_port(), Settings(webhook_spool=str(tmp_path / "small"),
                                                             webhook_insecure=True))  # fmt: skip
    small.max_batch_bytes = 1024  # the application reads it when the server starts
    await small.start()
    small.subscribe("/audit")
    assert (await post(small, "/audit", batch(*map(str, range(200)))))[0] == 413
    await small.stop()
    assert spooled(server) == [] and spooled(small) == []


async def test_repeated_events_are_dropped_and_counted(server):
    server.subscribe("/audit")
    assert (await post(server, "/audit", batch("a", "b")))[0] == 200
    assert (await post(server, "/audit", batch("a", "b")))[0] == 200  # a retry of a batch that got through
    assert (await post(server, "/audit", batch("b", "c")))[0] == 200
    assert (await post(server, "/audit", batch("c", stage="RequestReceived")))[0] == 200  # another stage
    assert spooled(server) == [["a", "b"], ["c"], ["c"]] and server.repeats == 3


async def test_only_the_api_servers_client_certificate_gets_in(mtls, certs, strangers):
    mtls.subscribe("/audit")
    ok = client_context(certs, certs.client_cert, certs.client_key)
    assert (await post(mtls, "/audit", batch("1"), ok))[0] == 200
    assert (await post(mtls, "/audit", batch("2"), client_context(certs)))[0] == 401  # no certificate
    other_name = make_client_cert(certs, "mallory")
    assert (await post(mtls, "/audit", batch("3"), client_context(certs, *other_name)))[0] == 403
    for cert in (make_client_cert(certs, "kube-apiserver", days=-1), (strangers.client_cert, strangers.client_key)):
        with pytest.raises(aiohttp.ClientError):  # expired, or signed by another CA: the handshake fails
            await post(mtls, "/audit", batch("4"), client_context(certs, *cert))
    assert spooled(mtls) == [["1"]] and mtls.answers == {200: 1, 401: 1, 403: 1}


async def test_a_bearer_token_from_a_file_compared_and_reloaded(certs, tmp_path):
    token = tmp_path / "token"
    token.write_text("first-token\n")
    srv = await serve(tmp_path / "spool", webhook_tls_cert=str(certs.server_cert),
                      webhook_tls_key=str(certs.server_key), webhook_token_file=str(token))  # fmt: skip
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


async def slow_post(srv, path, first_part, started):
    """A request whose body never finishes arriving: the headers promise more than is sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".encode() + first_part)
    await writer.drain()
    started.set()
    answer = await reader.readline()
    writer.close()
    return int(answer.split()[1])


async def test_slow_bodies_time_out_and_a_flood_of_requests_is_bounded(server):
    server.subscribe("/audit")
    server.body_seconds, server.max_requests = 0.5, 3
    starts = [asyncio.Event() for _ in range(3)]
    slow = [asyncio.create_task(slow_post(server, "/audit", b'{"kind":', s)) for s in starts]
    for s in starts:
        await s.wait()
    while server.under_way < 3:  # the three are under way, waiting for their bodies
        await asyncio.sleep(0.005)
    status, retry, _ = await post(server, "/audit", batch("flood"))
    assert (status, retry) == (429, "1")
    assert await asyncio.gather(*slow) == [408, 408, 408]
    assert (await post(server, "/audit", batch("after")))[0] == 200  # and the server goes on
    assert spooled(server) == [["after"]] and server.answers == {429: 1, 408: 3, 200: 1}


def test_appends_from_several_threads_rotate_without_losing_or_mixing_a_line(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    spool = Spool(tmp_path, file_bytes=4096, files=1000)  # rotate every few lines, keep every file
    lines = [b"%04d" % i + b"x" * 200 + b"\n" for i in range(400)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(spool.append, lines))
    spool.close()
    kept = [line for f in tmp_path.glob("audit*.log") for line in f.read_bytes().splitlines(keepends=True)]
    assert sorted(kept) == lines  # every line once, none cut or mixed with another
