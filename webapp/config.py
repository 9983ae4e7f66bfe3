"""Settings read from the environment, shared by the web app and the worker."""

import os
from dataclasses import dataclass, fields
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    """Everything the store, the queue and the worker need to agree on.

    The web app copies these into ``app.config`` under the same upper-case
    names, so a test config can override any of them.
    """

    #: Directory for the SQLite file and the generated secret key.
    INSTANCE_PATH: str = str(PROJECT_ROOT / "instance")
    #: SQLite file holding Huey's queue and the job records (the default).
    DATABASE: str = ""
    #: When set, Redis holds the queue and the job records instead.
    REDIS_URL: str = ""
    #: ``host:port,host:port`` of Redis Sentinels; the pool then follows the master they name.
    REDIS_SENTINELS: str = ""
    #: The Sentinel service (master) name.
    REDIS_SENTINEL_SERVICE: str = "mymaster"
    #: Seconds a finished job (and its upload) is kept before it is purged.
    JOB_RETENTION: float = 7 * 24 * 3600
    #: Seconds a purged id keeps answering 410 rather than 404.
    TOMBSTONE_RETENTION: float = 90 * 24 * 3600
    #: Seconds between heartbeats of a worker and of the jobs it runs.
    HEARTBEAT_INTERVAL: float = 5.0
    #: A running job whose heartbeat is older than this is lost.
    HEARTBEAT_TIMEOUT: float = 30.0
    #: A job still queued after this many seconds, with no task for it in Huey's queue, is enqueued again.
    REQUEUE_AFTER: float = 300.0
    #: Largest upload accepted, in bytes.
    MAX_UPLOAD_BYTES: int = 16 * 1024 * 1024

    @property
    def database_path(self) -> str:
        return self.DATABASE or os.path.join(self.INSTANCE_PATH, "tasklight.db")

    @classmethod
    def from_mapping(cls, mapping) -> "Settings":
        """Build settings from any mapping of upper-case names, such as app.config."""
        values = {}
        for field in fields(cls):
            if mapping.get(field.name) not in (None, ""):
                values[field.name] = field.type(mapping[field.name])
        return cls(**values)

    @classmethod
    def from_env(cls) -> "Settings":
        """Read ``REDIS_URL`` as is and every other setting as ``TASKLIGHT_<NAME>``."""
        env = {"REDIS_URL": os.environ.get("REDIS_URL")}
        for field in fields(cls):
            if field.name != "REDIS_URL":
                env[field.name] = os.environ.get(f"TASKLIGHT_{field.name}")
        return cls.from_mapping(env)
