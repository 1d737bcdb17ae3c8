"""What the operator builds once at start-up and every detection shares: one typed object in kopf's memo.

Built by the start-up handler from the settings (``auditwatch run``'s options) and the alert receivers,
and stopped by the cleanup handler: the write budget every API write waits for, the shared source
readers, the webhook server, the shard Lease and the findings watch (with shards), the alert
notifier and the metrics. A detection's runtime takes this object, not its parts one by one.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from auditwatch.api.settings import Settings
from auditwatch.findings.alerts import AlertConfig, Notifier
from auditwatch.findings.peers import PeerWrites
from auditwatch.kube.budget import WriteBudget
from auditwatch.kube.client import Kube, PostEvent
from auditwatch.kube.watch import FindingsWatch
from auditwatch.runtime.metrics import Metrics
from auditwatch.runtime.readers import Readers
from auditwatch.runtime.shards import ShardLeases
from auditwatch.sources.webhook import WebhookServer

Logger = logging.Logger | logging.LoggerAdapter[Any]


@dataclass
class Services:
    settings: Settings
    budget: WriteBudget
    post: PostEvent  # how an Event is posted (kopf's, in the operator)
    readers: Readers
    metrics: Metrics
    webhooks: WebhookServer | None = None
    notifier: Notifier | None = None
    peers: PeerWrites | None = None  # fed by the findings watch (with shards)
    watch: FindingsWatch | None = None
    leases: ShardLeases | None = None  # this replica's shard Lease, and what it sees of the others'
    _renewing: asyncio.Task[None] | None = None
    _probing: asyncio.Task[None] | None = None  # the event loop's lag (metrics.loop_lag)

    @classmethod
    async def start(cls, settings: Settings, alerts: AlertConfig | None, post: PostEvent, logger: Logger) -> Services:
        """Start what runs beside the detections: the webhook server, the Lease renewal, the notifier and
        the metrics endpoint, as the settings ask."""
        webhooks = None
        if address := settings.webhook_address:
            webhooks = WebhookServer(*address, settings)
            await webhooks.start()
            logger.info("audit webhook server listening on %s://%s", webhooks.scheme, settings.webhook_listen)
        elif settings.webhook_listen:
            logger.error("%s", settings.webhook_off)
        s = settings
        budget = WriteBudget(s.write_qps, s.write_burst, s.write_concurrency)
        readers = Readers(settings, webhooks)
        peers = watch = leases = renewing = None
        if s.sharded:
            peers = PeerWrites()
            loop = asyncio.get_running_loop()
            watch = FindingsWatch(s.namespaces, lambda obj: loop.call_soon_threadsafe(peers.seen, obj))
            watch.start()
            leases = ShardLeases(Kube(budget, post), s.own_namespace, s.shard, s.pod, s.shard_lease_seconds)
            renewing = asyncio.create_task(leases.run())
        notifier = None
        if alerts is not None:  # `auditwatch run --alerts FILE`, checked before kopf starts
            notifier = Notifier(alerts, client.Configuration.get_default_copy().host)
            notifier.start()
            logger.info("alerts to %s", ", ".join(f"{r.name} ({r.type})" for r in alerts.receivers))
        metrics = Metrics(budget, readers, webhooks, notifier, leases)
        probing = asyncio.create_task(metrics.loop_lag.run())
        if s.metrics_listen:
            metrics.serve(s.metrics_listen)
            logger.info("Prometheus metrics at http://%s/metrics", s.metrics_listen)
        return cls(
            settings, budget, post, readers, metrics, webhooks, notifier, peers, watch, leases, renewing, probing
        )

    def kube(self) -> Kube:
        """An API client for one detection; all of them share the write budget."""
        return Kube(self.budget, self.post)

    async def stop(self) -> None:
        if self.webhooks is not None:
            await self.webhooks.stop()
        if self.notifier is not None:
            await self.notifier.stop()
        if self.watch is not None:
            self.watch.stop()
        for task in (self._renewing, self._probing):
            if task is not None:
                task.cancel()
