"""The operator's settings: one typed object, made from `auditwatch run`'s options, passed to the runtime.

`auditwatch lint` takes the options that decide whether a detection can run (``--webhook-listen``,
``--geoip-db``) so that its verdict is the operator's. Intervals have the defaults the README states;
tests shorten them here rather than patching module constants.
"""

from __future__ import annotations

import os
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from auditwatch.sources.paths import AUDIT_LOG_DIRS

Seconds = Annotated[float, Field(gt=0)]


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    namespaces: tuple[str, ...] = ()  # watched namespaces; empty: the whole cluster
    liveness: str = "http://0.0.0.0:8080/healthz"  # kopf's liveness endpoint; '' turns it off
    webhook_listen: str = "0.0.0.0:8081"  # HOST:PORT of the audit webhook server; '' turns it off
    webhook_queue_batches: Annotated[int, Field(ge=1)] = 256  # per subscriber; a full queue answers 503
    geoip_db: str | None = Field(default_factory=lambda: os.environ.get("AUDITWATCH_GEOIP_DB") or None)
    allow_paths: tuple[str, ...] = AUDIT_LOG_DIRS  # file sources may only read below these directories
    poll_seconds: Seconds = 0.1  # a file tail at the end of its file looks again after this long
    flush_seconds: Seconds = 0.25  # due findings are written this often
    status_seconds: Seconds = 1.0  # a detection's status is written at most this often
    expire_seconds: Seconds = 60.0  # findings past their TTL are looked for this often
    finding_write_seconds: Seconds = 1.0  # at most one write per finding per this long
    finding_event_seconds: Seconds = 60.0  # at most one FindingUpdated Event per finding per this long

    @field_validator("webhook_listen")
    @classmethod
    def host_port(cls, value: str) -> str:
        if value:
            _, sep, port = value.rpartition(":")
            if not sep or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"webhook_listen {value!r} is not HOST:PORT")
        return value

    @property
    def webhook_address(self) -> tuple[str, int] | None:
        """(host, port) of the webhook server, or None when it is off."""
        if not self.webhook_listen:
            return None
        host, _, port = self.webhook_listen.rpartition(":")
        return host or "0.0.0.0", int(port)
