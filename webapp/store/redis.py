"""Job records in Redis, shared by any number of web and worker hosts."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable

import redis
from redis.connection import parse_url
from redis.sentinel import Sentinel, SentinelConnectionPool

from . import ACTIVE, RUNNING, WAITING, Job, JobStore, unavailable_on

#: Compare-and-set in one round trip. KEYS[1] is the record; ARGV[1] the version a change was
#: computed from, ARGV[2] the new record, ARGV[3] the index commands that go with it (JSON).
#: Answers 1 once written, or else the record as it is now (nil if there is none). The version
#: is read off the end of the stored JSON, where ``Job.to_json`` always puts it, rather than by
#: decoding the whole record.
COMPARE_AND_SET = """
local current = redis.call('GET', KEYS[1])
if not current then return false end
if string.match(current, '"version":(%d+)}$') ~= ARGV[1] then return current end
redis.call('SET', KEYS[1], ARGV[2])
if ARGV[3] ~= '[]' then
  for _, command in ipairs(cjson.decode(ARGV[3])) do redis.call(unpack(command)) end
end
return 1
"""

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
    ``owner:<owner>`` (by creation time), ``waiting`` (by ``waiting_since``),
    ``deadlines`` (by start deadline), ``finished`` (by purge time) and
    ``workers`` (by last beat); the set ``running``; and the hash
    ``usage:<owner>`` (``active`` jobs and stored upload ``bytes``).
    """

    def __init__(self, connection_pool: redis.ConnectionPool, prefix: str = "tasklight:", **options):
        super().__init__(**options)
        self.redis = redis.Redis(connection_pool=connection_pool)
        self.prefix = prefix
        # Sent by its SHA; redis-py loads it again if the server has forgotten it.
        self._compare_and_set = self.redis.register_script(COMPARE_AND_SET)
        self._offset = 0.0
        self._clock_checked = -math.inf

    #: Seconds between readings of the server's clock; in between, its offset from ours is reused.
    CLOCK_CHECK_INTERVAL = 30.0

    def now(self) -> float:
        """Redis's own clock, which every host shares: ours plus the offset last read with TIME."""
        if time.monotonic() >= self._clock_checked + self.CLOCK_CHECK_INTERVAL:
            with unavailable_on(is_outage):
                seconds, micros = self.redis.time()
            self._offset = seconds + micros / 1e6 - time.time()
            self._clock_checked = time.monotonic()
        return time.time() + self._offset

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
        return self.parsed.parse(job_id, raw) if raw else None

    def modify(self, job_id, change, known=None):
        # One round trip when ``known`` is current: the script writes only if
        # the stored version is still the one the change was computed from.
        # Otherwise it answers the record as it is now, and the change is
        # computed again from that.
        key = self.key("job", job_id)
        with unavailable_on(is_outage):
            job = known or self.load(job_id)
            while job is not None:
                expected = job.version
                new = change(job)
                if new is None:
                    return None
                new.version = expected + 1
                indexes = json.dumps(self._index_commands(job, new))
                answer = self._compare_and_set(keys=[key], args=[str(expected), new.to_json(), indexes])
                if answer == 1:
                    return new
                job = Job.from_json(answer) if answer else None
        return None

    def _index_commands(self, old: Job, job: Job) -> list[list]:
        """The index updates that go with a change from ``old`` to ``job``, as Redis commands."""
        if (old.state, old.waiting_since, old.purge_at) == (job.state, job.waiting_since, job.purge_at):
            return []
        commands = [["SADD" if job.state == RUNNING else "SREM", self.key("running"), job.id]]
        if job.state in WAITING:
            commands.append(["ZADD", self.key("waiting"), repr(job.waiting_since), job.id])
        else:
            commands += [["ZREM", self.key("waiting"), job.id], ["ZREM", self.key("deadlines"), job.id]]
        if old.state in ACTIVE and job.state not in ACTIVE:
            commands.append(["HINCRBY", self.key("usage", job.owner), "active", -1])
        if job.purge_at is not None:
            commands.append(["ZADD", self.key("finished"), repr(job.purge_at), job.id])
        return commands

    def insert(self, job: Job, upload_content: bytes | None, queue_push: tuple[str, tuple] | None = None) -> None:
        # One MULTI/EXEC: the record, its indexes and (with ``queue_push``) its task, all or none.
        with unavailable_on(is_outage), self.redis.pipeline() as pipe:
            pipe.set(self.key("job", job.id), job.to_json(), nx=True)
            if upload_content is not None:
                pipe.set(self.key("upload", job.id), upload_content)
            pipe.zadd(self.key("all"), {job.id: job.created_at})
            pipe.zadd(self.key("owner", job.owner), {job.id: job.created_at})
            if job.start_by is not None:
                pipe.zadd(self.key("deadlines"), {job.id: job.start_by})
            pipe.zadd(self.key("waiting"), {job.id: job.waiting_since})
            pipe.hincrby(self.key("usage", job.owner), "active", 1)
            pipe.hincrby(self.key("usage", job.owner), "bytes", job.upload_size or 0)
            if queue_push:
                command, args = queue_push
                pipe.execute_command(command, *args)
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

    def list(self, owner=None, state=None, kind=None, before=None, limit=20, label=None) -> list[Job]:
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
                        if not label or label.casefold() in job.label.casefold():
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

    def waiting(self, since_before: float) -> list[Job]:
        with unavailable_on(is_outage):
            return self._many(self.redis.zrangebyscore(self.key("waiting"), "-inf", f"({since_before!r}"))

    def usage(self, owner: str) -> tuple[int, int]:
        with unavailable_on(is_outage):
            active, stored = self.redis.hmget(self.key("usage", owner), "active", "bytes")
        return int(active or 0), int(stored or 0)

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
            pipe.zrem(self.key("waiting"), job_id)
            pipe.hincrby(self.key("usage", job.owner), "bytes", -(job.upload_size or 0))
            if job.state in ACTIVE:
                pipe.hincrby(self.key("usage", job.owner), "active", -1)
            pipe.execute()

    def beat_worker(self, name: str) -> None:
        now = self.now()
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
