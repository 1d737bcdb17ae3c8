"""Notifications about findings (``auditwatch run --alerts FILE``): Alertmanager, a JSON webhook, Slack.

The cluster admin configures receivers in one YAML file, mounted from a Secret (the install's
``manifests/components/alerts``): URLs and tokens are credentials, so they are read from files, never
from a detection, and the operator needs no RBAC on Secrets. A notice is sent when a finding is
created and, at most once per ``updateInterval``, when its count has grown since the last notice.

Sending never holds detection up: ``notify`` queues (bounded, ``MAX_QUEUE`` per receiver; the
oldest are dropped and counted when a receiver is down that long), and one task per receiver sends
with a doubling, jittered backoff until the receiver takes it. A creation notice is recorded in the
finding's ``status.alert`` (``pending`` in the write that follows the create, ``sent`` once every
receiver has taken it), so one still pending when the operator stops is sent again when it starts:
delivery is at least once; Alertmanager merges repeats of an alert (same labels), chat may see two.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import ssl
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import aiohttp
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from auditwatch.api.models import GROUP, VERSION, Severity
from auditwatch.errors import AuditwatchError
from auditwatch.times import DURATION, parse_duration

MAX_QUEUE = 1000
MAX_BATCH = 100  # alerts per POST to Alertmanager
BACKOFF = (1.0, 300.0)  # first and longest wait between attempts, seconds
TIMEOUT = 10.0
_LABEL = re.compile(r"[^a-zA-Z0-9_]")
log = logging.getLogger(__name__)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Endpoint(_Strict):
    url: str | None = Field(None, description="Where to POST (use urlFile when the URL is a secret, as Slack's is).")
    urlFile: str | None = Field(None, description="A file holding the URL (a key of the mounted Secret).")
    bearerTokenFile: str | None = Field(None, description="A file holding a token sent as Authorization: Bearer.")
    caFile: str | None = Field(None, description="CA bundle for an https URL signed by a private CA.")

    @model_validator(mode="after")
    def one_url(self) -> Endpoint:
        if (self.url is None) == (self.urlFile is None):
            raise ValueError("give exactly one of url and urlFile")
        return self


class Receiver(_Strict):
    name: str = Field(min_length=1, max_length=63)
    type: Literal["alertmanager", "webhook", "slack"]
    endpoint: Endpoint
    minSeverity: Severity = "informational"


class AlertConfig(_Strict):
    receivers: list[Receiver] = Field(min_length=1)
    updateInterval: str = Field("1h", pattern=DURATION, description="Growth notices per finding at most this often.")
    # Where a notice links to: {namespace} and {name} are the finding's. Default: its API URL.
    findingURL: str = ""

    @model_validator(mode="after")
    def unique_names(self) -> AlertConfig:
        names = [r.name for r in self.receivers]
        if len(names) != len(set(names)):
            raise ValueError(f"receiver names repeat: {', '.join(sorted(names))}")
        return self


class AlertConfigError(AuditwatchError, ValueError):
    """The alerts file cannot be used; the message names the file and the field."""


def load_config(path: str | Path) -> AlertConfig:
    try:
        data = yaml.safe_load(Path(path).read_text())
        config = AlertConfig.model_validate(data)
        for r in config.receivers:
            for name in ("urlFile", "bearerTokenFile", "caFile"):
                if (file := getattr(r.endpoint, name)) and not Path(file).is_file():
                    raise AlertConfigError(f"{path}: receiver {r.name}: endpoint.{name} {file} is not a readable file")
        return config
    except OSError as exc:
        raise AlertConfigError(f"{path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise AlertConfigError(f"{path}: not YAML: {exc}") from None
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors())
        raise AlertConfigError(f"{path}: {errors}") from None


@dataclass(frozen=True)
class Notice:
    """One finding as a notice says it: created, or grown since the last notice."""

    what: Literal["created", "updated"]
    detection: str
    namespace: str
    finding: str
    key: dict[str, str]
    message: str
    count: int
    first_seen: str
    last_seen: str
    severity: str
    risk_score: int
    mitre: str


Deliver = Callable[[Notice], None]  # called once every receiver has taken a creation notice


class Notifier:
    """Queues notices per receiver and sends them in the background."""

    def __init__(
        self, config: AlertConfig, api_url: str = "", backoff: tuple[float, float] = BACKOFF, max_queue: int = MAX_QUEUE
    ) -> None:
        self.config, self.backoff = config, backoff
        self.update_interval = parse_duration(config.updateInterval)
        self.link = config.findingURL or (
            f"{api_url.rstrip('/')}/apis/{GROUP}/{VERSION}/namespaces/{{namespace}}/detectionfindings/{{name}}"
        )
        self.queues: dict[str, deque[tuple[Notice, Deliver | None]]] = {
            r.name: deque(maxlen=max_queue) for r in config.receivers
        }
        self.sent: Counter[tuple[str, str]] = Counter()  # (receiver, "sent" | "failed" | "dropped") -> notices
        self._waiting: dict[tuple[str, str], set[str]] = {}  # (namespace, finding) -> receivers yet to take it
        self._wake: dict[str, asyncio.Event] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def notify(self, notice: Notice, delivered: Deliver | None = None) -> None:
        """Queue a notice for every receiver that wants its severity; ``delivered`` runs once all took it."""
        wanted = [r for r in self.config.receivers if _rank(notice.severity) >= _rank(r.minSeverity)]
        if delivered is not None:
            self._waiting[(notice.namespace, notice.finding)] = {r.name for r in wanted}
            if not wanted:
                delivered(notice)
        for r in wanted:
            queue = self.queues[r.name]
            if len(queue) == queue.maxlen:
                self.sent[(r.name, "dropped")] += 1
            queue.append((notice, delivered))
            if event := self._wake.get(r.name):
                event.set()

    def pending(self, receiver: str) -> int:
        return len(self.queues[receiver])

    def start(self) -> None:
        for r in self.config.receivers:
            self._wake[r.name] = asyncio.Event()
            self._tasks.append(asyncio.create_task(self._run(r), name=f"alerts:{r.name}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self, receiver: Receiver) -> None:
        queue, wake = self.queues[receiver.name], self._wake[receiver.name]
        send = SENDERS[receiver.type]
        timeout = aiohttp.ClientTimeout(total=TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            wait = self.backoff[0]
            while True:
                if not queue:
                    wake.clear()
                    await wake.wait()
                    continue
                batch = list(queue)[: MAX_BATCH if receiver.type == "alertmanager" else 1]
                try:
                    payload = send([notice for notice, _ in batch], self.link)
                    await _post(session, receiver.endpoint, PATHS.get(receiver.type, ""), payload)
                except (aiohttp.ClientError, TimeoutError, OSError, DeliveryError) as exc:
                    self.sent[(receiver.name, "failed")] += 1
                    log.warning(
                        "alert receiver %s: %s; trying again in %.0f s (%d queued)",
                        receiver.name,
                        _reason(exc),
                        wait,
                        len(queue),
                    )
                    await asyncio.sleep(wait * random.uniform(0.8, 1.2))
                    wait = min(wait * 2, self.backoff[1])
                    continue
                wait = self.backoff[0]
                for item in batch:
                    if queue and queue[0] is item:  # not pushed out by newer notices meanwhile
                        queue.popleft()
                    self.sent[(receiver.name, "sent")] += 1
                    self._taken(receiver.name, *item)

    def _taken(self, receiver: str, notice: Notice, delivered: Deliver | None) -> None:
        key = (notice.namespace, notice.finding)
        waiting = self._waiting.get(key)
        if delivered is None or waiting is None:
            return
        waiting.discard(receiver)
        if not waiting:
            del self._waiting[key]
            delivered(notice)


class DeliveryError(AuditwatchError):
    """The receiver answered, but not with a 2xx."""


async def _post(session: aiohttp.ClientSession, endpoint: Endpoint, path: str, payload: Any) -> None:
    url = endpoint.url or Path(endpoint.urlFile or "").read_text().strip()  # read each time: Secrets rotate
    if path and not url.rstrip("/").endswith(path):
        url = url.rstrip("/") + path
    headers = {}
    if endpoint.bearerTokenFile:
        headers["Authorization"] = "Bearer " + Path(endpoint.bearerTokenFile).read_text().strip()
    tls = ssl.create_default_context(cafile=endpoint.caFile) if endpoint.caFile else True
    async with session.post(url, json=payload, headers=headers, ssl=tls) as response:
        if response.status >= 300:
            body = (await response.text())[:200]
            raise DeliveryError(f"HTTP {response.status} {body.strip()}")


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _rank(severity: str) -> int:
    order = get_args(Severity)
    return order.index(severity) if severity in order else 0


def _link(template: str, notice: Notice) -> str:
    return template.format(namespace=notice.namespace, name=notice.finding)


def alertmanager_payload(notices: list[Notice], link: str) -> list[dict[str, Any]]:
    """Alertmanager API v2 ``POST /api/v2/alerts``: one alert per finding (its labels identify it, so a
    growth notice updates the same alert)."""
    alerts = []
    for n in notices:
        labels = {
            "alertname": n.detection,
            "namespace": n.namespace,
            "finding": n.finding,
            "severity": n.severity,
            "source": "auditwatch",
        }
        if n.mitre:
            labels["mitre_technique"] = n.mitre
        labels |= {f"key_{_LABEL.sub('_', k)}": v for k, v in n.key.items()}
        alerts.append(
            {
                "labels": labels,
                "annotations": {
                    "summary": n.message,
                    "count": str(n.count),
                    "firstSeen": n.first_seen,
                    "lastSeen": n.last_seen,
                    "riskScore": str(n.risk_score),
                },
                "startsAt": n.first_seen or None,
                "generatorURL": _link(link, n),
            }
        )
    return [{k: v for k, v in a.items() if v is not None} for a in alerts]


def webhook_payload(notices: list[Notice], link: str) -> dict[str, Any]:
    """A generic JSON webhook: one POST per notice."""
    (n,) = notices
    return {
        "version": "1",
        "kind": f"finding.{n.what}",
        "url": _link(link, n),
        "detection": {
            "name": n.detection,
            "namespace": n.namespace,
            "severity": n.severity,
            "riskScore": n.risk_score,
            "mitre": n.mitre.split(",") if n.mitre else [],
        },
        "finding": {
            "name": n.finding,
            "key": n.key,
            "message": n.message,
            "count": n.count,
            "firstSeen": n.first_seen,
            "lastSeen": n.last_seen,
        },
    }


def slack_payload(notices: list[Notice], link: str) -> dict[str, Any]:
    """A Slack-compatible incoming webhook (Mattermost and Rocket.Chat take the same)."""
    (n,) = notices
    head = "New finding" if n.what == "created" else "Finding grew"
    mitre = f" · MITRE {n.mitre}" if n.mitre else ""
    return {
        "text": f"*{head}* [{n.severity}] {n.detection}{mitre}\n{n.message}\n{n.count} event(s), first "
        f"{n.first_seen}, last {n.last_seen} · <{_link(link, n)}|{n.namespace}/{n.finding}>"
    }


PATHS = {"alertmanager": "/api/v2/alerts"}  # an Alertmanager receiver's url is Alertmanager's own
SENDERS: dict[str, Callable[[list[Notice], str], Any]] = {
    "alertmanager": alertmanager_payload,
    "webhook": webhook_payload,
    "slack": slack_payload,
}
