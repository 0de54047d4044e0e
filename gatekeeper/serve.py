"""``gatekeeper serve``: one worker in-process, or a supervisor with N workers on one port.

With ``workers: N > 1`` the supervisor re-executes ``gatekeeper serve`` N times with
``GATEKEEPER_WORKER=i``; every worker binds the proxy and admin ports with ``SO_REUSEPORT`` so the
kernel spreads connections, and writes Prometheus samples to a shared multiprocess directory so any
worker's ``/metrics`` shows the sum. The supervisor forwards SIGHUP (reload) and SIGTERM/SIGINT
(graceful drain) to the workers and restarts a worker that dies unexpectedly.

A reload asked for while a process starts is kept, not lost and not fatal. SIGHUP's default
action ends a process, and one started under ``nohup`` inherits "ignore": either way a SIGHUP
that arrived after the policy was read and before the event loop took the signal over would
have killed the worker or left it on the old policy. ``serve`` therefore notes a SIGHUP from its
first line (``_note_early_reload``) and the worker reloads once its listeners are up. The
supervisor installs its own handlers before it starts anyone and starts each worker with SIGHUP
blocked, so a worker's interpreter start-up, before ``serve`` runs, holds the signal pending
instead of dying of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING

from .affinity import pin_worker
from .config import Config, load_config
from .errors import ConfigError, DependencyError

if TYPE_CHECKING:
    from .proxy.forward import Upstreams
    from .runtime import Runtime

log = logging.getLogger("gatekeeper")

WORKER_ENV = "GATEKEEPER_WORKER"
# The supervisor's pid, given to each worker: a worker compares its parent with it, so one started
# just as its supervisor died knows it too (its parent is already someone else when it looks).
SUPERVISOR_ENV = "GATEKEEPER_SUPERVISOR"


def _worker_audit_paths(cfg: Config, worker: int) -> Config:
    """Per-process hash chains: each worker writes its own file (``audit.w0.jsonl``, ...)."""
    from dataclasses import replace

    sinks = []
    for sink in cfg.audit.sinks:
        if sink.type == "file" and sink.path:
            stem, ext = os.path.splitext(sink.path)
            sink = replace(sink, path=f"{stem}.w{worker}{ext or '.jsonl'}")
        sinks.append(sink)
    return replace(cfg, audit=replace(cfg.audit, sinks=tuple(sinks)))


async def run_worker(cfg: Config, *, worker: int | None, ready_fd: int | None = None) -> int:
    """Run the proxy and admin listeners until SIGTERM/SIGINT; returns the exit status."""
    from aiohttp import web

    from .heap import HeapKeeper
    from .proxy.admin import build_admin_app
    from .proxy.forward import Upstreams
    from .proxy.handler import GateHandler
    from .proxy.server import GateServer
    from .runtime import Runtime, default_replica

    multi = worker is not None
    if cfg.worker_cpu_affinity == "auto":
        # Before the audit thread and the rest start (they inherit it; existing ones move too).
        cpu = pin_worker(worker or 0)
        log.info("worker %d on CPU %s (worker_cpu_affinity: auto)", worker or 0, cpu)
    if multi:
        assert worker is not None
        cfg = _worker_audit_paths(cfg, worker)
    replica = cfg.audit.replica or default_replica(worker)
    if cfg.audit.replica and multi:
        replica = f"{cfg.audit.replica}-w{worker}"
    runtime = Runtime(cfg, replica=replica)
    # Re-screening records and their metric come from one worker (each change counted once).
    runtime.rescreener.writes = not multi or worker == 0
    from .ownership.watch import signatures

    # Before the load: a file replaced while the registry loads is still seen as changed.
    watched = [src.path for src in cfg.entities.sources]
    watched_at_load = signatures(watched)
    try:
        await runtime.start()
    except ConfigError as exc:
        print(f"gatekeeper: configuration error:\n{exc}", file=sys.stderr)
        return 2
    except DependencyError as exc:
        # E.g. an audit chain that cannot be read: maybe passing (a remount), so exit 1 and let
        # the supervisor (or the service manager) retry with its backoff.
        print(f"gatekeeper: cannot start: {exc}", file=sys.stderr)
        with contextlib.suppress(Exception):
            await runtime.close()
        return 1
    heap = HeapKeeper(asyncio.get_running_loop())
    runtime.after_reload = heap.reloaded
    upstreams = Upstreams(
        connect_timeout_s=cfg.limits.upstream_connect_timeout_s,
        read_timeout_s=cfg.limits.upstream_timeout_s,
    )
    handler = GateHandler(cfg, runtime, upstreams)
    # SECURITY: GateServer answers unparsable HTTP with problem+json and one quiet log line, and
    # closes a connection whose request head is not complete within header_timeout_s.
    server = GateServer(
        handler,
        header_timeout_s=cfg.limits.header_timeout_s,
        keepalive_timeout_s=cfg.limits.keepalive_timeout_s,
        max_line_size=cfg.limits.max_header_bytes,
        max_field_size=cfg.limits.max_header_bytes,
    )
    tls = cfg.listen.tls
    ssl_ctx = None if tls is None else tls.server_context()
    try:
        listener = await asyncio.get_running_loop().create_server(
            server,
            cfg.listen.host,
            cfg.listen.port,
            reuse_port=multi or None,
            ssl=ssl_ctx,
            backlog=1024,
        )
    except OSError as exc:
        await _close_all(upstreams, runtime)
        return _cannot_listen("listen", cfg.listen.host, cfg.listen.port, exc)
    admin_runner = web.AppRunner(
        build_admin_app(runtime, multi_worker=multi), handle_signals=False, access_log=None
    )
    await admin_runner.setup()
    admin_site = web.TCPSite(admin_runner, cfg.admin.host, cfg.admin.port, reuse_port=multi)
    try:
        await admin_site.start()
    except OSError as exc:
        listener.close()
        await admin_runner.cleanup()
        await _close_all(upstreams, runtime)
        return _cannot_listen("admin", cfg.admin.host, cfg.admin.port, exc)

    from .admission import start_admission

    try:
        admission_runner = await start_admission(cfg, runtime, reuse_port=multi)
    except OSError as exc:
        listener.close()
        await admin_runner.cleanup()
        await _close_all(upstreams, runtime)
        assert cfg.admission is not None
        return _cannot_listen("admission", cfg.admission.host, cfg.admission.port, exc)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reloads: set[asyncio.Task[bool]] = set()

    def on_reload() -> None:
        task = loop.create_task(runtime.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, on_reload)
    if _take_early_reload():
        on_reload()  # asked for while starting: the policy read then may be older
    watcher: asyncio.Task[None] | None = None
    if cfg.entities.watch_interval_s > 0:
        from .ownership.watch import watch_sources

        watcher = loop.create_task(
            watch_sources(watched, cfg.entities.watch_interval_s, runtime.reload, watched_at_load)
        )
    supervisor = os.environ.get(SUPERVISOR_ENV)
    if multi and supervisor and supervisor.isdigit():
        _watch_supervisor(loop, stop, int(supervisor))
    log.info(
        "gatekeeper %s listening on %s:%s (admin %s:%s)",
        replica,
        cfg.listen.host,
        listener.sockets[0].getsockname()[1] if listener.sockets else "?",
        cfg.admin.host,
        _bound_port(admin_site),
    )
    heap.started()  # last: everything loaded so far lives as long as the process
    if ready_fd is not None:
        os.write(ready_fd, b"ready\n")
    await stop.wait()
    if watcher is not None:
        watcher.cancel()
    log.info("draining (%.0fs at most)", cfg.limits.drain_timeout_s)
    # Stop accepting, let in-flight requests finish, then close.
    listener.close()
    await server.shutdown(cfg.limits.drain_timeout_s)
    handler.close()
    if admission_runner is not None:
        await admission_runner.cleanup()
    await admin_runner.cleanup()
    heap.close()
    await upstreams.close()
    await runtime.close()
    return 0


SUPERVISOR_CHECK_S = 1.0


def _watch_supervisor(loop: asyncio.AbstractEventLoop, stop: asyncio.Event, parent: int) -> None:
    """Drain and exit once the supervisor is gone (killed, OOM): an orphaned worker would keep
    serving with its old config, unsupervised, holding the port and its audit file."""

    def check() -> None:
        if os.getppid() != parent:
            log.error("supervisor %d is gone; draining", parent)
            stop.set()
            return
        loop.call_later(SUPERVISOR_CHECK_S, check)

    check()


def _cannot_listen(key: str, host: str, port: int, exc: OSError) -> int:
    """A listen address that cannot be bound is a configuration error: one line, exit 2.

    Exit 2 also tells the supervisor not to restart the worker (it would fail the same way).
    """
    # uvloop's message repeats the address; the errno's own text is the cause.
    why = os.strerror(exc.errno).lower() if exc.errno else str(exc)
    print(
        f"gatekeeper: configuration error:\n{key}: cannot listen on {host}:{port}: {why}",
        file=sys.stderr,
    )
    return 2


async def _close_all(upstreams: Upstreams, runtime: Runtime) -> None:
    """Release what a worker opened before its listeners (connections, the audit chain)."""
    await upstreams.close()
    await runtime.close()


def _bound_port(site: object) -> object:
    server = getattr(site, "_server", None)
    sockets = getattr(server, "sockets", None) or []
    return sockets[0].getsockname()[1] if sockets else "?"


_early_reload = False


def _note_early_reload() -> None:
    """Until the event loop handles SIGHUP, a SIGHUP is noted (``_take_early_reload``), and
    one held pending since the process started (the supervisor blocks it) is taken now."""

    def note(_signum: int, _frame: object) -> None:
        global _early_reload
        _early_reload = True

    signal.signal(signal.SIGHUP, note)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})


def _take_early_reload() -> bool:
    """Whether a SIGHUP arrived before the event loop took the signal over (and forget it)."""
    global _early_reload
    noted, _early_reload = _early_reload, False
    return noted


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def serve(config_path: str) -> int:
    """Entry point of ``gatekeeper serve``."""
    _note_early_reload()
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        print(f"gatekeeper: configuration error:\n{exc}", file=sys.stderr)
        return 2
    worker_env = os.environ.get(WORKER_ENV)
    _install_uvloop()
    if worker_env is not None:
        return asyncio.run(run_worker(cfg, worker=int(worker_env)))
    if cfg.workers == 1:
        return asyncio.run(run_worker(cfg, worker=None))
    return _supervise(cfg, config_path)


# A worker that dies is restarted after RESTART_FIRST_S, doubling for each death that follows a
# short life (under RESTART_STABLE_S), up to RESTART_MAX_S: a worker that cannot start (disk,
# permissions, a crash at import) is retried like Kubernetes' CrashLoopBackOff, not respawned in a
# tight loop that floods the log while the other workers serve.
RESTART_FIRST_S = 0.1
RESTART_MAX_S = 30.0
RESTART_STABLE_S = 10.0


def restart_delay(quick_deaths: int) -> float:
    """Seconds before restarting a worker after its ``quick_deaths``-th short life in a row."""
    return float(min(RESTART_MAX_S, RESTART_FIRST_S * 2 ** max(0, quick_deaths - 1)))


def _forget_metrics(prom_dir: str, pid: int) -> None:
    """A dead worker's live gauges (in flight, ``gatekeeper_info``) leave ``/metrics``."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, prom_dir)  # type: ignore[no-untyped-call]


def _supervise(cfg: Config, config_path: str) -> int:
    """Start and watch ``cfg.workers`` worker processes; forward signals to them."""
    prom_dir = tempfile.mkdtemp(prefix="gatekeeper-prom-")
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=prom_dir, **{SUPERVISOR_ENV: str(os.getpid())})
    cmd = [sys.executable, "-m", "gatekeeper", "serve", "--config", config_path]
    procs: dict[int, subprocess.Popen[bytes]] = {}
    started: dict[int, float] = {}
    quick_deaths: dict[int, int] = {}
    pending: dict[int, float] = {}  # worker -> monotonic time of its restart

    def spawn(i: int) -> None:
        # The worker starts with SIGHUP blocked (the mask is inherited) until its serve() notes it.
        # One sent to the supervisor meanwhile waits for the unblock and is then forwarded.
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        try:
            procs[i] = subprocess.Popen(cmd, env=dict(env, **{WORKER_ENV: str(i)}))
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        started[i] = time.monotonic()

    stopping = False
    status = 0

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping = True
            pending.clear()
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    for i in range(cfg.workers):
        spawn(i)
    try:
        while True:
            alive = False
            now = time.monotonic()
            for i, p in list(procs.items()):
                if i in pending:  # stopping clears pending (forward)
                    alive = True
                    if now >= pending[i]:
                        del pending[i]
                        spawn(i)
                    continue
                code = p.poll()
                if code is None:
                    alive = True
                elif not stopping:
                    _forget_metrics(prom_dir, p.pid)
                    if code == 2:  # bad config: restarting cannot help
                        stopping = True
                        status = 2
                        forward(signal.SIGTERM, None)
                    else:
                        short = now - started[i] < RESTART_STABLE_S
                        quick_deaths[i] = quick_deaths.get(i, 0) + 1 if short else 1
                        delay = restart_delay(quick_deaths[i])
                        log.error("worker %d exited with %s; restarting in %.1fs", i, code, delay)
                        pending[i] = now + delay
                        alive = True
            if not alive:
                break
            time.sleep(0.1)
    finally:
        shutil.rmtree(prom_dir, ignore_errors=True)
    return status
