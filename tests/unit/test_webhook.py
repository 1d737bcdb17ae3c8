"""The audit webhook server: batches in, one chunk per batch per subscriber, 404 and 503 answers."""

import asyncio
import json

import aiohttp
import pytest

from auditwatch.devcluster.cluster import free_port
from auditwatch.sources.webhook import WebhookServer

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def server():
    srv = WebhookServer("127.0.0.1", free_port())
    await srv.start()
    yield srv
    await srv.stop()


async def post(srv, path, body):
    async with aiohttp.ClientSession() as session, session.post(f"http://127.0.0.1:{srv.port}{path}", data=body) as r:
        return r.status


async def test_a_batch_reaches_every_subscriber_of_its_path_as_one_line(server):
    a, b, other = server.subscribe("/audit"), server.subscribe("/audit"), server.subscribe("/other")
    batch = json.dumps({"kind": "EventList", "items": [{"auditID": "1"}, {"auditID": "2"}]}, indent=2).encode()
    assert await post(server, "/audit", batch) == 200
    chunk_a = await asyncio.wait_for(anext(a.chunks()), 1)
    chunk_b = await asyncio.wait_for(anext(b.chunks()), 1)
    assert chunk_a is chunk_b and chunk_a.data.count(b"\n") == 1 and chunk_a.data.endswith(b"\n")
    assert json.loads(chunk_a.data)["items"][1]["auditID"] == "2"
    assert chunk_a.origin == "webhook:/audit" and other.queue.empty()


async def test_seq_only_grows(server):
    feed = server.subscribe("/audit")
    for _ in range(3):
        await post(server, "/audit", b'{"kind":"EventList","items":[]}')
    seqs = [(await anext(feed.chunks())).seq for _ in range(3)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3


async def test_unknown_paths_get_404_and_a_full_queue_503(server):
    assert await post(server, "/nobody", b"{}") == 404
    server.queue_batches = 1
    server.subscribe("/audit")
    assert await post(server, "/audit", b"{}") == 200
    assert await post(server, "/audit", b"{}") == 503  # kube-apiserver's batch backend retries
