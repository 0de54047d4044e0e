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
is in flight and go out together as one pipeline (one write, one read); a lone call goes out
directly, so an idle gate adds no latency. See ``bench/quota_bench.py`` for the effect. On a
plain-TCP ``redis://`` server, ``consume`` instead uses one lean pipelined RESP connection
(``resp.py``: hiredis reader, the commands of one event-loop turn in one write), which pipelines
concurrent calls by itself at a fraction of redis-py's per-call cost; refunds, reads, clusters,
TLS and unix sockets stay on redis-py.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, ResponseError

from ..context import R_STORE_UNAVAILABLE
from ..errors import DependencyError
from ..memo import remember
from . import window as W
from .quota import Bucket, ConsumeResult, Reservation, ReservedAmount, encode_group
from .resp import RespPipe, encode

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

_CONSUME_SHA = hashlib.sha1(CONSUME_LUA.encode()).hexdigest()
_REFUND_SHA = hashlib.sha1(REFUND_LUA.encode()).hexdigest()
_MAX_BATCH = 256

_Args = tuple[Any, ...]


# The bucket hash's one field that is not a sub-bucket: the latest end of a lease on the bucket.
LEASE_END = b"LEASE_END"


def redis_key(prefix: str, group: str, bucket_key: str, window_s: int) -> str:
    """The Redis key of one bucket (layout in the module docstring)."""
    return f"{{{prefix}:{encode_group(group)}}}:q:{bucket_key}:{window_s}"


def _bulk(s: str) -> str:
    """One RESP bulk string of an ASCII argument (length in characters == length in bytes)."""
    return f"${len(s)}\r\n{s}\r\n"


_SUB_BUCKETS_BULK = _bulk(str(W.SUB_BUCKETS))
_ZERO_BULK = _bulk("0")
# window_s -> (sub-bucket width, the bulk strings of `width` and `window_s`): policy constants.
_windows: dict[int, tuple[int, str]] = {}
_KEY_ARG_LEN = 256  # longer bucket keys (ids from token claims) are encoded every time


def _window(window_s: int) -> tuple[int, str]:
    w = _windows.get(window_s)
    if w is None:
        width = W.width_ms(window_s)
        w = (width, _bulk(str(width)) + _bulk(str(window_s)))
        remember(_windows, window_s, w, 0, 0)
    return w


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
        self._queue: list[_Pending] = []
        self._drainer: asyncio.Task[None] | None = None
        self._inflight = False
        self._init_lock = asyncio.Lock()
        self._initialized = not isinstance(client, RedisCluster)
        # Plain-TCP Redis, batched: consume goes through a lean pipelined connection (resp.py).
        self._pipe: RespPipe | None = None
        if batch and isinstance(client, Redis):
            pool = client.connection_pool
            kw = pool.connection_kwargs
            if pool.connection_class is Connection and "host" in kw:
                self._pipe = RespPipe(
                    kw["host"],
                    int(kw.get("port", 6379)),
                    db=int(kw.get("db", 0) or 0),
                    username=kw.get("username"),
                    password=kw.get("password"),
                    connect_timeout_s=timeout_s,
                    timeout_s=timeout_s,
                )
        # The lean path's encoded command prefixes (per bucket count) and key arguments.
        self._heads: dict[int, bytes] = {}
        self._key_args: dict[tuple[str, str, int], bytes] = {}

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
        if self._pipe is not None:
            return await self._pipe_consume(group, buckets, t, charge_t)
        keys: list[str] = []
        argv: list[Any] = [t, W.SUB_BUCKETS, 0 if charge_t == t else charge_t]
        slots: list[int] = []
        for b in buckets:
            width = W.width_ms(b.window_s)
            cur = W.slot_of(t, width)
            charge = W.slot_of(charge_t, width)
            slots.append(charge)
            keys.append(self.key(group, b.key, b.window_s))
            argv += [repr(float(b.amount)), repr(float(b.limit)), cur, width, b.window_s, charge]
        args: _Args = (_CONSUME_SHA, len(keys), *keys, *argv)
        try:
            async with asyncio.timeout(self.timeout_s):
                if self.batch:
                    reply = await self._submit(args)
                else:
                    reply = await self._evalsha(CONSUME_LUA, args)
        except Exception as exc:
            raise _unavailable(exc) from exc
        return self._result(group, buckets, slots, reply)

    async def _pipe_consume(
        self, group: str, buckets: Sequence[Bucket], t: int, charge_t: int
    ) -> ConsumeResult:
        command, slots = self._consume_command(group, buckets, t, charge_t)
        try:
            reply = await self._pipe_evalsha(command)
        except Exception as exc:
            raise _unavailable(exc) from exc
        return self._result(group, buckets, slots, reply)

    def _consume_command(
        self, group: str, buckets: Sequence[Bucket], t: int, charge_t: int | None = None
    ) -> tuple[bytes, list[int]]:
        """The RESP ``EVALSHA`` of one consume (same bytes as ``resp.encode`` of its arguments).

        The command prefix and every key argument are cached (they repeat across requests), the
        numbers are formatted into one ASCII string: a third of ``resp.encode``'s cost.
        """
        n = len(buckets)
        head = self._heads.get(n)
        if head is None:
            # "*<argc>" then EVALSHA, sha, key count; argv is now_ms, S, lease_end_ms, then 6 per
            # bucket.
            head = b"*%d\r\n" % (3 + n + 3 + 6 * n) + encode(("EVALSHA", _CONSUME_SHA, n))[4:]
            remember(self._heads, n, head, 0, 0)
        parts = [head]
        ts = str(t)
        # A lease ends after now; charging now is an ordinary request (no lease end recorded).
        lease_end = _ZERO_BULK if charge_t is None or charge_t == t else _bulk(str(charge_t))
        nums = [_bulk(ts), _SUB_BUCKETS_BULK, lease_end]
        slots: list[int] = []
        for b in buckets:
            k = (group, b.key, b.window_s)
            key = self._key_args.get(k)
            if key is None:
                raw = self.key(group, b.key, b.window_s).encode()
                key = b"$%d\r\n%b\r\n" % (len(raw), raw)
                remember(self._key_args, k, key, len(raw), _KEY_ARG_LEN)
            parts.append(key)
            width, tail = _window(b.window_s)
            cur = W.slot_of(t, width)
            c = str(cur)
            if charge_t is None or charge_t == t:
                charge, ch = cur, c
            else:
                charge = W.slot_of(charge_t, width)
                ch = str(charge)
            slots.append(charge)
            a, lim = repr(float(b.amount)), repr(float(b.limit))
            nums.append(
                f"${len(a)}\r\n{a}\r\n${len(lim)}\r\n{lim}\r\n${len(c)}\r\n{c}\r\n{tail}"
                f"${len(ch)}\r\n{ch}\r\n"
            )
        parts.append("".join(nums).encode())
        return b"".join(parts), slots

    @staticmethod
    def _result(
        group: str, buckets: Sequence[Bucket], slots: list[int], reply: list[Any]
    ) -> ConsumeResult:
        admitted = int(reply[0]) == 1
        totals = [float(x) for x in reply[3:]]
        remaining: dict[str, float] = {}
        if admitted:
            # One loop, no generator frames: this runs once per admitted request.
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

    async def _evalsha(self, script: str, args: _Args) -> Any:
        await self._ready()
        async with self._slots:
            try:
                return await self.client.execute_command("EVALSHA", *args)
            except NoScriptError:
                # A fresh or restarted server: load and resend (NOSCRIPT means it did not run).
                await self.client.script_load(script)
                return await self.client.execute_command("EVALSHA", *args)

    async def _pipe_evalsha(self, command: bytes) -> Any:
        """One consume on the lean connection, failing within ``timeout_s``.

        The common case (connected, script cached) needs no timer of its own: the connection's
        watchdog fails the call within ``timeout_s``. Connecting first or reloading the script
        takes several round trips, bounded together by one ``asyncio.timeout``.
        """
        pipe = self._pipe
        assert pipe is not None
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        reply: Any = None
        sent = pipe.connected
        if sent:
            reply = await pipe.send(command)
            if not isinstance(reply, hiredis.ReplyError):
                return reply
        async with asyncio.timeout_at(deadline):
            if not sent:
                reply = await pipe.send(command)
            if isinstance(reply, hiredis.ReplyError):
                if not str(reply).startswith("NOSCRIPT"):
                    raise ResponseError(str(reply))
                # A fresh or restarted server: load and resend (NOSCRIPT means it did not run).
                loaded = await pipe.call(("SCRIPT", "LOAD", CONSUME_LUA))
                if isinstance(loaded, hiredis.ReplyError):
                    raise ResponseError(str(loaded))
                reply = await pipe.send(command)
                if isinstance(reply, hiredis.ReplyError):
                    raise ResponseError(str(reply))
        return reply

    async def _submit(self, args: _Args) -> Any:
        """Coalesce: go direct when idle; otherwise queue behind the in-flight round trip.

        A newcomer never overtakes a non-empty queue (that would starve queued callers).
        """
        if not self._inflight and not self._queue:
            self._inflight = True
            try:
                return await self._evalsha(CONSUME_LUA, args)
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
            await self.client.script_load(CONSUME_LUA)
            again = await self._send_pipeline([batch[i] for i in missing])
            for i, r in zip(missing, again, strict=True):
                replies[i] = r
        return replies

    async def _send_pipeline(self, batch: list[_Args]) -> list[Any]:
        await self._ready()
        async with asyncio.timeout(self.timeout_s), self._slots:
            pipe = self.client.pipeline(transaction=False)
            for args in batch:
                pipe.execute_command("EVALSHA", *args)
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
                await self._evalsha(REFUND_LUA, (_REFUND_SHA, len(keys), *keys, *argv))
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
        if self._pipe is not None:
            await self._pipe.close()
        if self._drainer is not None and not self._drainer.done():
            self._drainer.cancel()
        await self.client.aclose()
