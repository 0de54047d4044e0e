"""Redis quota store: one Lua script checks and consumes every bucket of a request, all or none.

Key layout (a contract, asserted by ``tests/stores/test_key_layout.py``)::

    {<prefix>:<group>}:q:<quota>:<per>:<id>:<window_s>      HASH  <sub-bucket> -> amount

* ``<prefix>`` is ``quota.key_prefix`` (default ``gk``); ``<group>`` is the ownership group (the
  ultimate parent; ``*`` when unknown). ``<quota>:<per>:<id>`` is ``quota.bucket_key``; the licence
  budget is ``license:license:<licence id>``. Every component is percent-encoded
  (``quota.encode_part``), so no id can contain ``:``, ``{`` or ``}`` and forge another key.
* Everything between the braces is the Redis Cluster **hash tag**: all buckets of one group hash
  to one slot, so the script may touch a tenant's and its parent's buckets atomically on a
  cluster too.
* Fields are sub-bucket indexes ``floor(now_ms / width_ms)`` (decimal), values the amount consumed
  in that sub-bucket (``HINCRBYFLOAT``), see ``stores/window.py`` for the window arithmetic and its
  error bound. Stale fields are deleted by the script; each consume sets the key's TTL to
  ``(60 + 2) * width_ms`` so idle buckets vanish.
* ``<window_s>`` is in the key so a policy that changes a window starts a fresh bucket instead of
  misreading sub-buckets of another width.
* One more field, ``LEASE_END``, holds the latest end (ms) of a lease taken on the bucket
  (``stores/lease.py``). A refusal's ``Retry-After`` is then at most the time until it: credit a
  gate process leased and did not use returns by then, perhaps long before the window frees any.

Time comes from the gate (the ``now`` argument), so replicas need NTP-synced clocks; a skew of
``s`` seconds shifts a request by at most ``s`` between sub-buckets (newer-than-now sub-buckets
are still counted, so a fast clock cannot hide usage from a slow one).

Failure semantics: the client never retries a script (a timed-out ``EVALSHA`` may have run; a
retry could consume twice). Any connection error, timeout or server error raises
``DependencyError("store-unavailable")`` within ``timeout_s``; the request is then refused or
allowed by ``on_store_error``. If a reply is lost after the script ran, the budget is charged for a
request that was not forwarded: the error is on the safe side. The connection pool reconnects by
itself once Redis is back; a restarted server has lost its script cache, so ``NOSCRIPT`` reloads
the script and resends (safe: ``NOSCRIPT`` means it did not run).

Coalescing (``batch=True``): concurrent ``consume`` calls on one store queue up while a round trip
is in flight and go out together as one redis-py pipeline (one write, one read); a lone call goes
out directly, so an idle gate adds no latency. With quota leases (``stores/lease.py``) a busy
tenant costs one script call per 16 to 256 requests, so redis-py's per-call cost stays small.
Everything goes through redis-py's public API (``register_script``, pipelines, its connection
pool), with hiredis as its reply parser.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from ..context import R_STORE_UNAVAILABLE
from ..errors import DependencyError
from . import window as W
from .quota import Bucket, ConsumeResult, Reservation, ReservedAmount, encode_group

CONSUME_LUA = """
-- KEYS: bucket hashes of one group (one hash tag).
-- ARGV: now_ms, S, lease_end_ms, then per bucket: amount, limit, cur_slot, width_ms, window_s,
-- charge_slot. A lease (stores/lease.py) passes lease_end_ms > 0 and charges the sub-bucket of
-- its end (charge_slot >= cur_slot); each bucket then keeps the latest lease end in its field
-- LEASE_END, so that a refusal can advise a retry when leased credit comes back.
local now = tonumber(ARGV[1])
local S = tonumber(ARGV[2])
local lease_end = tonumber(ARGV[3])
local n = #KEYS
local totals, ends = {}, {}
local worst_i, worst_wait = 0, -1
for i = 1, n do
  local b = 3 + (i - 1) * 6
  local amount = tonumber(ARGV[b + 1])
  local limit = tonumber(ARGV[b + 2])
  local cur = tonumber(ARGV[b + 3])
  local width = tonumber(ARGV[b + 4])
  local window = tonumber(ARGV[b + 5])
  local oldest = cur - S
  local flat = redis.call('HGETALL', KEYS[i])
  local live, stale = {}, {}
  ends[i] = 0
  for j = 1, #flat, 2 do
    local s = tonumber(flat[j])
    if flat[j] == 'LEASE_END' then
      ends[i] = tonumber(flat[j + 1]) or 0
    elseif s == nil or s < oldest then
      stale[#stale + 1] = flat[j]
    else
      live[#live + 1] = {s, tonumber(flat[j + 1])}
    end
  end
  if #stale > 0 then redis.call('HDEL', KEYS[i], unpack(stale)) end
  table.sort(live, function(x, y) return x[1] < y[1] end)
  local total = 0
  for j = 1, #live do total = total + live[j][2] end
  totals[i] = total
  if total + amount > limit then
    local wait = math.max(1, window)
    if amount <= limit then
      local need = total + amount - limit
      local freed = 0
      for j = 1, #live do
        freed = freed + live[j][2]
        if freed >= need then
          wait = math.max(1, math.ceil(((live[j][1] + S + 1) * width - now) / 1000))
          break
        end
      end
    end
    if ends[i] > now then
      -- Credit leased to gate processes and not used by them comes back when their leases end:
      -- by then, perhaps long before the window frees anything. Advice: the retry is decided
      -- afresh.
      wait = math.min(wait, math.max(1, math.ceil((ends[i] - now) / 1000)))
    end
    if wait > worst_wait then worst_wait = wait; worst_i = i end
  end
end
local out = {0, worst_i, worst_wait}
if worst_i == 0 then
  out = {1, 0, 0}
  for i = 1, n do
    local b = 3 + (i - 1) * 6
    local width = tonumber(ARGV[b + 4])
    redis.call('HINCRBYFLOAT', KEYS[i], ARGV[b + 6], ARGV[b + 1])
    if lease_end > ends[i] then redis.call('HSET', KEYS[i], 'LEASE_END', ARGV[3]) end
    local ttl = (tonumber(ARGV[b + 6]) + S + 2) * width - now
    redis.call('PEXPIRE', KEYS[i], math.max(ttl, (S + 2) * width))
  end
end
for i = 1, n do out[3 + i] = string.format('%.17g', totals[i]) end
return out
"""

REFUND_LUA = """
-- KEYS: bucket hashes; ARGV: per bucket: slot, amount. Expired sub-buckets are left alone.
for i = 1, #KEYS do
  local slot = ARGV[2 * i - 1]
  local amount = tonumber(ARGV[2 * i])
  local v = redis.call('HGET', KEYS[i], slot)
  if v then
    if tonumber(v) - amount <= 0 then
      redis.call('HDEL', KEYS[i], slot)
    else
      redis.call('HINCRBYFLOAT', KEYS[i], slot, -amount)
    end
  end
end
return 1
"""

_MAX_BATCH = 256

# One script call: its keys and its arguments.
_Args = tuple[list[str], list[Any]]


# The bucket hash's one field that is not a sub-bucket: the latest end of a lease on the bucket.
LEASE_END = b"LEASE_END"


def redis_key(prefix: str, group: str, bucket_key: str, window_s: int) -> str:
    """The Redis key of one bucket (layout in the module docstring)."""
    return f"{{{prefix}:{encode_group(group)}}}:q:{bucket_key}:{window_s}"


def _unavailable(exc: BaseException) -> DependencyError:
    what = type(exc).__name__ if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
    return DependencyError(R_STORE_UNAVAILABLE, f"quota store: {what}")


class _Pending:
    __slots__ = ("args", "future")

    def __init__(self, args: _Args, future: asyncio.Future[Any]) -> None:
        self.args = args
        self.future = future


class RedisQuotaStore:
    """Quota store on Redis or Redis Cluster (``redis.asyncio``, hiredis parser when installed)."""

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        timeout_s: float = 0.5,
        prefix: str = "gk",
        batch: bool = True,
        max_connections: int = 64,
    ) -> None:
        self.client = client
        # Bounds concurrent round trips (and so connections); waiting for a slot counts against
        # the caller's timeout, so overload degrades to fast 503s, not a pile-up.
        self._slots = asyncio.Semaphore(max_connections)
        self.timeout_s = timeout_s
        self.prefix = prefix
        self.batch = batch
        # redis-py's script objects: EVALSHA, and on NOSCRIPT (a fresh or restarted server, so
        # the script did not run) SCRIPT LOAD and the call again.
        self._consume_script: AsyncScript = client.register_script(CONSUME_LUA)
        self._refund_script: AsyncScript = client.register_script(REFUND_LUA)
        self._queue: list[_Pending] = []
        self._drainer: asyncio.Task[None] | None = None
        self._inflight = False
        self._init_lock = asyncio.Lock()
        self._initialized = not isinstance(client, RedisCluster)

    @classmethod
    def from_url(
        cls, url: str, *, timeout_s: float = 0.5, prefix: str = "gk", batch: bool = True
    ) -> RedisQuotaStore:
        common: dict[str, Any] = {
            "socket_timeout": timeout_s,
            "socket_connect_timeout": timeout_s,
            # Never retry: a script whose reply was lost may have run (see module docstring).
            "retry": Retry(NoBackoff(), 0),
            "decode_responses": False,
        }
        client: Redis | RedisCluster
        if url.startswith("redis+cluster://"):
            parts = urlsplit(url)
            userinfo, _, hosts = parts.netloc.rpartition("@")
            nodes = []
            for hp in hosts.split(","):
                host, _, port = hp.rpartition(":")
                nodes.append(ClusterNode(host or "127.0.0.1", int(port or 6379)))
            if userinfo:
                user, _, password = userinfo.partition(":")
                common["username"] = unquote(user) or None
                common["password"] = unquote(password) or None
            client = RedisCluster(startup_nodes=nodes, **common)
        else:
            client = Redis.from_url(url, **common)
        return cls(client, timeout_s=timeout_s, prefix=prefix, batch=batch)

    def key(self, group: str, bucket_key: str, window_s: int) -> str:
        return redis_key(self.prefix, group, bucket_key, window_s)

    # ----------------------------------------------------------------------------- consume

    async def consume(
        self, group: str, buckets: Sequence[Bucket], now: float, *, charge_at: float | None = None
    ) -> ConsumeResult:
        """``QuotaStore.consume``; ``charge_at`` (>= ``now``) books the amounts in the sub-bucket
        of that later time, so they stay counted until then plus a window (``stores/lease.py``).
        """
        if not buckets:
            return ConsumeResult(True, {}, None, None, Reservation(group, ()))
        t = W.now_ms(now)
        charge_t = t if charge_at is None else max(t, W.now_ms(charge_at))
        keys: list[str] = []
        # A lease ends after now; charging now is an ordinary request (no lease end recorded).
        argv: list[Any] = [t, W.SUB_BUCKETS, 0 if charge_t == t else charge_t]
        slots: list[int] = []
        for b in buckets:
            width = W.width_ms(b.window_s)
            cur = W.slot_of(t, width)
            charge = W.slot_of(charge_t, width)
            slots.append(charge)
            keys.append(self.key(group, b.key, b.window_s))
            argv += [repr(float(b.amount)), repr(float(b.limit)), cur, width, b.window_s, charge]
        try:
            async with asyncio.timeout(self.timeout_s):
                if self.batch:
                    reply = await self._submit((keys, argv))
                else:
                    reply = await self._run(self._consume_script, keys, argv)
        except Exception as exc:
            raise _unavailable(exc) from exc
        return self._result(group, buckets, slots, reply)

    @staticmethod
    def _result(
        group: str, buckets: Sequence[Bucket], slots: list[int], reply: list[Any]
    ) -> ConsumeResult:
        admitted = int(reply[0]) == 1
        totals = [float(x) for x in reply[3:]]
        remaining: dict[str, float] = {}
        if admitted:
            items = []
            for b, tot, s in zip(buckets, totals, slots, strict=True):
                remaining[b.quota] = b.limit - (tot + b.amount)
                items.append(ReservedAmount(b.quota, b.key, b.window_s, s, float(b.amount)))
            return ConsumeResult(True, remaining, None, None, Reservation(group, tuple(items)))
        for b, tot in zip(buckets, totals, strict=True):
            remaining[b.quota] = float(b.limit) - tot
        return ConsumeResult(False, remaining, int(reply[2]), buckets[int(reply[1]) - 1].quota)

    async def _ready(self) -> None:
        """Discover a cluster's topology once, before concurrent use.

        Concurrent first commands on a fresh ``RedisCluster`` each start their own discovery and
        tear down each other's connections; one discovery under a lock avoids that.
        """
        if self._initialized:
            return
        async with self._init_lock:
            if not self._initialized:
                assert isinstance(self.client, RedisCluster)
                await self.client.initialize()
                self._initialized = True

    async def _run(self, script: AsyncScript, keys: list[str], argv: list[Any]) -> Any:
        """One script call (redis-py reloads the script on NOSCRIPT, which means it did not run)."""
        await self._ready()
        async with self._slots:
            return await script(keys=keys, args=argv)

    async def _submit(self, args: _Args) -> Any:
        """Coalesce: go direct when idle; otherwise queue behind the in-flight round trip.

        A newcomer never overtakes a non-empty queue (that would starve queued callers).
        """
        if not self._inflight and not self._queue:
            self._inflight = True
            try:
                return await self._run(self._consume_script, *args)
            finally:
                self._inflight = False
                self._kick()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(args, fut))
        self._kick()
        return await fut

    def _kick(self) -> None:
        if self._queue and not self._inflight and (self._drainer is None or self._drainer.done()):
            self._drainer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while self._queue and not self._inflight:
            # Callers that already timed out are dropped, never sent: nothing is consumed for them.
            batch = [p for p in self._queue[:_MAX_BATCH] if not p.future.done()]
            del self._queue[:_MAX_BATCH]
            if not batch:
                continue
            self._inflight = True
            try:
                replies = await self._pipeline([p.args for p in batch])
            except BaseException as exc:  # fan the failure out; the drainer itself must not die
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
            else:
                for p, r in zip(batch, replies, strict=True):
                    if p.future.done():
                        continue
                    if isinstance(r, BaseException):
                        p.future.set_exception(r)
                    else:
                        p.future.set_result(r)
            finally:
                self._inflight = False

    async def _pipeline(self, batch: list[_Args]) -> list[Any]:
        replies = await self._send_pipeline(batch)
        missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if missing:
            # NOSCRIPT means those calls did not run: load the script and send them again.
            await self.client.script_load(CONSUME_LUA)
            again = await self._send_pipeline([batch[i] for i in missing])
            for i, r in zip(missing, again, strict=True):
                replies[i] = r
        return replies

    async def _send_pipeline(self, batch: list[_Args]) -> list[Any]:
        """One pipeline of consume calls; errors come back as values, one per call.

        ``EVALSHA`` is queued as a plain pipeline command rather than through the script object,
        which would ask ``SCRIPT EXISTS`` before every pipeline (one more round trip each time).
        """
        await self._ready()
        sha = self._consume_script.sha
        async with asyncio.timeout(self.timeout_s), self._slots:
            pipe = self.client.pipeline(transaction=False)
            for keys, argv in batch:
                pipe.execute_command("EVALSHA", sha, len(keys), *keys, *argv)
            return list(await pipe.execute(raise_on_error=False))

    # ------------------------------------------------------------------------- the rest

    async def refund(self, reservation: Reservation) -> None:
        if not reservation.items:
            return
        keys = [self.key(reservation.group, it.key, it.window_s) for it in reservation.items]
        argv: list[Any] = []
        for it in reservation.items:
            argv += [it.slot, repr(float(it.amount))]
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._run(self._refund_script, keys, argv)
        except Exception as exc:
            raise _unavailable(exc) from exc

    async def usage(self, group: str, key: str, window_s: int, now: float) -> float:
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._ready()
                raw = await self.client.hgetall(self.key(group, key, window_s))
        except Exception as exc:
            raise _unavailable(exc) from exc
        slots = {int(k): float(v) for k, v in raw.items() if k != LEASE_END}
        return W.live_total(slots, W.slot_of(W.now_ms(now), W.width_ms(window_s)))

    async def ping(self) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._ready()
                await self.client.ping()
        except Exception as exc:
            raise _unavailable(exc) from exc

    async def close(self) -> None:
        if self._drainer is not None and not self._drainer.done():
            self._drainer.cancel()
        await self.client.aclose()
