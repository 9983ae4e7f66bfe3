"""Every setting, read from the environment in one place, each with its own parser.

The web app, the consumer, the CLI and the benchmarks all build their settings
here, so they cannot disagree about a name, a default or a type.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def flag(value: Any) -> bool:
    """A yes/no setting: ``1``, ``true``, ``yes`` or ``on`` (any case) mean yes."""
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def setting(default: Any, parse: Callable[[Any], Any], env: str | None = None) -> Any:
    """Declare a setting: its default, how to parse it, and its environment variable (``TASKLIGHT_<NAME>``)."""
    return field(default=default, metadata={"parse": parse, "env": env})


@dataclass(frozen=True)
class Settings:
    """Everything the web app, the store, the queue and the worker need to agree on.

    The web app copies these into ``app.config`` under the same names, so a test
    config can override any of them.
    """

    #: Directory for the SQLite file and the generated secret key.
    INSTANCE_PATH: str = setting(str(PROJECT_ROOT / "instance"), str)
    #: SQLite file holding Huey's queue and the job records (the default).
    DATABASE: str = setting("", str)
    #: When set, Redis holds the queue and the job records instead.
    REDIS_URL: str = setting("", str, env="REDIS_URL")
    #: ``host:port,host:port`` of Redis Sentinels; the pool then follows the master they name.
    REDIS_SENTINELS: str = setting("", str)
    #: The Sentinel service (master) name.
    REDIS_SENTINEL_SERVICE: str = setting("mymaster", str)
    #: Signs session cookies; generated once into the instance folder when unset.
    SECRET_KEY: str = setting("", str, env="SECRET_KEY")
    #: Turns on /admin, which asks for this token.
    ADMIN_TOKEN: str = setting("", str, env="ADMIN_TOKEN")
    #: Served over HTTPS (by a proxy in front), so cookies are marked Secure.
    BEHIND_TLS: bool = setting(False, flag)
    #: Seconds a finished job (and its upload) is kept before it is purged.
    JOB_RETENTION: float = setting(7 * 24 * 3600.0, float)
    #: Seconds a purged id keeps answering 410 rather than 404.
    TOMBSTONE_RETENTION: float = setting(90 * 24 * 3600.0, float)
    #: Seconds between heartbeats of a worker and of the jobs it runs.
    HEARTBEAT_INTERVAL: float = setting(5.0, float)
    #: A running job whose heartbeat is older than this is lost.
    HEARTBEAT_TIMEOUT: float = setting(30.0, float)
    #: A job still queued after this many seconds, with no task for it in Huey's queue, is enqueued again.
    REQUEUE_AFTER: float = setting(300.0, float)
    #: Seconds a Redis command may wait for its answer before the store counts as unavailable.
    REDIS_SOCKET_TIMEOUT: float = setting(3.0, float)
    #: Largest upload accepted, in bytes.
    MAX_UPLOAD_BYTES: int = setting(16 * 1024 * 1024, int)
    #: Jobs one owner (browser session) may have queued, retrying or running at once.
    MAX_ACTIVE_JOBS: int = setting(10, int)
    #: Bytes of uploads one owner may have stored at once, across the jobs that are kept.
    MAX_STORED_UPLOAD_BYTES: int = setting(64 * 1024 * 1024, int)
    #: Seconds a status poll may wait for a web worker before it gets a quick 503; 0 turns that, and the pacing, off.
    OVERLOAD_WAIT: float = setting(0.5, float)
    #: Shows diagnostic fields (such as the timer's "crash on the first attempts") on the forms.
    DIAGNOSTICS: bool = setting(False, flag)

    @property
    def database_path(self) -> str:
        return self.DATABASE or os.path.join(self.INSTANCE_PATH, "tasklight.db")

    @classmethod
    def load(cls, overrides: Mapping[str, Any] | None = None) -> Settings:
        """Read every setting from its environment variable, then apply ``overrides`` (a test config)."""
        values = {}
        for spec in fields(cls):
            raw = os.environ.get(spec.metadata["env"] or f"TASKLIGHT_{spec.name}")
            if overrides is not None and spec.name in overrides:
                raw = overrides[spec.name]
            if raw not in (None, ""):
                values[spec.name] = spec.metadata["parse"](raw)
        return cls(**values)

    def with_secret_key(self, logger: logging.Logger) -> Settings:
        """These settings with a SECRET_KEY: the one given, or the instance's own (made once, kept private)."""
        if self.SECRET_KEY:
            return self
        return replace(self, SECRET_KEY=instance_secret_key(self.INSTANCE_PATH, logger))


def instance_secret_key(instance_path: str, logger: logging.Logger) -> str:
    """Read the instance's secret key, making it the first time, readable by this user only.

    The key is written to a private temporary file that is then hard-linked into
    place, so the key file appears whole or not at all: web workers starting
    together agree on one key, and a crash never leaves an empty key file.
    """
    path = os.path.join(instance_path, "secret_key")
    os.makedirs(instance_path, exist_ok=True)
    if not os.path.exists(path):
        draft = f"{path}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
            os.link(draft, path)
            logger.warning(
                "SECRET_KEY is not set: generated one and kept it in %s. Set SECRET_KEY when running on several hosts.",
                path,
            )
        except FileExistsError:
            pass  # Another process won the race; its key is the one.
        finally:
            os.unlink(draft)
    with open(path) as f:
        return f.read().strip()
