"""Job records in Redis, shared by any number of web and worker hosts."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable

import redis
from redis.connection import parse_url
from redis.sentinel import Sentinel, SentinelConnectionPool

from . import QUEUED, RETRYING, RUNNING, Job, JobStore, unavailable_on

#: Replies that mean the server cannot serve us just now, rather than a bug in a command.
OUTAGE_REPLIES = ("OOM", "READONLY", "WRONGTYPE", "MASTERDOWN", "LOADING", "MISCONF", "NOREPLICAS", "BUSY", "TRYAGAIN")


def reply_code(exc: redis.ResponseError) -> str:
    """The code that starts Redis's error reply, such as ``OOM`` or ``WRONGTYPE``.

    redis-py cuts the codes it knows (OOM, READONLY, LOADING, ...) off the
    message into ``status_code``, and a pipeline puts "Command # n (...) of
    pipeline caused error: " in front of the message, so neither starts it.
    """
    return exc.status_code or str(exc).rpartition(" of pipeline caused error: ")[2].partition(" ")[0]


def is_outage(exc: BaseException) -> bool:
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return True
    return isinstance(exc, redis.ResponseError) and reply_code(exc) in OUTAGE_REPLIES


class RedisStore(JobStore):
    """Records in Redis, under ``prefix``.

    Keys: ``job:<id>`` (the record as JSON), ``upload:<id>``, ``tomb:<id>``
    (when it was purged and whose it was, with a TTL); the sorted sets ``all``,
    ``owner:<owner>`` and ``queued`` (by creation time), ``deadlines`` (by start
    deadline), ``finished`` (by purge time) and ``workers`` (by last beat); and
    the set ``running``.
    """

    def __init__(self, connection_pool: redis.ConnectionPool, prefix: str = "tasklight:", **options):
        super().__init__(**options)
        self.redis = redis.Redis(connection_pool=connection_pool)
        self.prefix = prefix

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def close(self) -> None:
        self.redis.connection_pool.disconnect()

    def ping(self) -> None:
        with unavailable_on(is_outage):
            self.redis.ping()

    def load(self, job_id: str) -> Job | None:
        with unavailable_on(is_outage):
            raw = self.redis.get(self.key("job", job_id))
        return Job.from_json(raw) if raw else None

    def modify(self, job_id, change):
        key = self.key("job", job_id)

        def transaction(pipe: redis.client.Pipeline) -> Job | None:
            raw = pipe.get(key)
            job = change(Job.from_json(raw)) if raw else None
            pipe.multi()
            if job is not None:
                pipe.set(key, job.to_json())
                if job.state == RUNNING:
                    pipe.sadd(self.key("running"), job_id)
                else:
                    pipe.srem(self.key("running"), job_id)
                if job.state not in (QUEUED, RETRYING):
                    pipe.zrem(self.key("deadlines"), job_id)
                if job.state != QUEUED:
                    pipe.zrem(self.key("queued"), job_id)
                if job.purge_at is not None:
                    pipe.zadd(self.key("finished"), {job_id: job.purge_at})
            return job

        with unavailable_on(is_outage):
            # WATCH makes the read-check-write a compare-and-set: if anyone
            # else writes the record in between, redis-py runs it again.
            return self.redis.transaction(transaction, key, value_from_callable=True)

    def insert(self, job: Job, upload_content: bytes | None) -> None:
        with unavailable_on(is_outage), self.redis.pipeline() as pipe:
            pipe.set(self.key("job", job.id), job.to_json(), nx=True)
            if upload_content is not None:
                pipe.set(self.key("upload", job.id), upload_content)
            pipe.zadd(self.key("all"), {job.id: job.created_at})
            pipe.zadd(self.key("owner", job.owner), {job.id: job.created_at})
            if job.start_by is not None:
                pipe.zadd(self.key("deadlines"), {job.id: job.start_by})
            pipe.zadd(self.key("queued"), {job.id: job.created_at})
            pipe.execute()

    def upload_content(self, job_id: str) -> bytes | None:
        with unavailable_on(is_outage):
            return self.redis.get(self.key("upload", job_id))

    def tombstone(self, job_id: str) -> tuple[float, str] | None:
        with unavailable_on(is_outage):
            raw = self.redis.get(self.key("tomb", job_id))
        if not raw:
            return None
        tombstone = json.loads(raw)
        return tombstone["purged_at"], tombstone["owner"]

    def list(self, owner=None, state=None, kind=None, before=None, limit=20) -> list[Job]:
        index = self.key("owner", owner) if owner is not None else self.key("all")
        top = f"({before[0]!r}" if before else "+inf"
        jobs: list[Job] = []
        seen: set[str] = set()
        offset, batch = 0, max(limit * 4, 100)
        with unavailable_on(is_outage):
            # Filtering happens here, so read the index in batches until the
            # page is full; creation times tie only by accident, so ids break ties.
            while len(jobs) < limit:
                ids = self.redis.zrevrangebyscore(index, top, "-inf", start=offset, num=batch, withscores=True)
                if before and offset == 0:
                    ids = [*self._ties(index, before), *ids]
                if not ids:
                    break
                offset += batch
                for job in self._many(i for i, _ in ids):
                    # A job created between two batches shifts the offsets, so one may be read twice.
                    if job.id in seen:
                        continue
                    seen.add(job.id)
                    if (state is None or job.state == state) and (kind is None or job.kind == kind):
                        jobs.append(job)
                if len(ids) < batch:
                    break
        return jobs[:limit]

    def _ties(self, index: str, before: tuple[float, str]) -> list:
        """Members created at exactly the cursor's time but with a smaller id."""
        same = self.redis.zrangebyscore(index, before[0], before[0], withscores=True)
        return sorted((m for m in same if m[0].decode() < before[1]), key=lambda m: m[0], reverse=True)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        with unavailable_on(is_outage):
            ids = self.redis.zrange(self.key("all"), 0, -1)
            for start in range(0, len(ids), 500):
                for job in self._many(ids[start : start + 500]):
                    counts[job.state] = counts.get(job.state, 0) + 1
        return counts

    def _many(self, ids: Iterable[bytes]) -> list[Job]:
        keys = [self.key("job", i.decode()) for i in ids]
        return [Job.from_json(raw) for raw in (self.redis.mget(keys) if keys else []) if raw]

    def running(self) -> list[Job]:
        with unavailable_on(is_outage):
            return self._many(self.redis.smembers(self.key("running")))

    def overdue(self, now: float) -> list[Job]:
        with unavailable_on(is_outage):
            return self._many(self.redis.zrangebyscore(self.key("deadlines"), "-inf", f"({now!r}"))

    def stranded(self, created_before: float) -> list[Job]:
        with unavailable_on(is_outage):
            return self._many(self.redis.zrangebyscore(self.key("queued"), "-inf", f"({created_before!r}"))

    def purge_due(self, now: float) -> None:
        # Tombstones expire by their own TTL.
        with unavailable_on(is_outage):
            ids = self.redis.zrangebyscore(self.key("finished"), "-inf", now)
        for job_id in ids:
            self.delete(job_id.decode(), now)

    def delete(self, job_id: str, now: float) -> None:
        job = self.load(job_id)
        if job is None:
            return
        with unavailable_on(is_outage), self.redis.pipeline() as pipe:
            pipe.delete(self.key("job", job_id), self.key("upload", job_id))
            tombstone = json.dumps({"purged_at": now, "owner": job.owner})
            pipe.set(self.key("tomb", job_id), tombstone, ex=int(self.tombstone_retention) or None)
            pipe.zrem(self.key("all"), job_id)
            pipe.zrem(self.key("owner", job.owner), job_id)
            pipe.zrem(self.key("finished"), job_id)
            pipe.srem(self.key("running"), job_id)
            pipe.zrem(self.key("deadlines"), job_id)
            pipe.zrem(self.key("queued"), job_id)
            pipe.execute()

    def beat_worker(self, name: str) -> None:
        now = time.time()
        with unavailable_on(is_outage), self.redis.pipeline() as pipe:
            pipe.zadd(self.key("workers"), {name: now})
            pipe.zremrangebyscore(self.key("workers"), "-inf", now - 24 * 3600)
            pipe.execute()

    def forget_worker(self, name: str) -> None:
        with unavailable_on(is_outage):
            self.redis.zrem(self.key("workers"), name)

    def workers_since(self, since: float) -> list[str]:
        with unavailable_on(is_outage):
            return sorted(n.decode() for n in self.redis.zrangebyscore(self.key("workers"), since, "+inf"))


def redis_pool(settings) -> redis.ConnectionPool:
    """A connection pool for REDIS_URL, through Redis Sentinel when sentinels are configured.

    With sentinels, REDIS_URL still gives the database number and credentials;
    its host is ignored, since the sentinels say which server is the master.
    """
    # Without timeouts, a Redis that hangs (rather than refuses) would hold every web thread.
    timeout = settings.REDIS_SOCKET_TIMEOUT
    timeouts = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if not settings.REDIS_SENTINELS:
        return redis.ConnectionPool.from_url(settings.REDIS_URL, **timeouts)
    options = {**parse_url(settings.REDIS_URL), **timeouts}
    options.pop("host", None)
    options.pop("port", None)
    sentinels = [
        (host, int(port)) for host, _, port in (s.strip().rpartition(":") for s in settings.REDIS_SENTINELS.split(","))
    ]
    manager = Sentinel(sentinels, sentinel_kwargs={"socket_timeout": 1})
    return SentinelConnectionPool(settings.REDIS_SENTINEL_SERVICE, manager, **options)
