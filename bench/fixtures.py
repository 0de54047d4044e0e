"""Real processes for the load benchmarks: nginx (upstream + proxy_pass), Redis, bare proxy, gate.

Everything listens on free loopback ports and is stopped by ``Stack.close()`` (also on Ctrl-C).
The gate runs the full allow path of the shipped US policy pack:

* RS256 token (fresh key, JWKS file), a *foreign* tenant (``fjord-research``, Norway) so the
  ``foreign-tenant`` rule allows it *with* the ``foreign-monthly`` quota (Redis, Lua script);
* ownership from the demo's native registry plus a generated FtM registry (``--registry-size``
  entities, default 100k, same generator as ``bench/ownership_scale.py``);
* geo from the builtin GeoLite2 database and the demo anonymous-IP database; the client address
  is ``84.208.20.110`` (Norway) sent in ``X-Forwarded-For`` by a trusted proxy (127.0.0.1);
* a real Slurm job body (POST ``/slurm/v0.0.41/job/submit``) parsed by the slurm adapter;
* audit: file sink, ``durability: fsync`` (group commit), Ed25519 seals per batch.

The pack is copied with the quota limit raised to 1e15 TPP-hours so a benchmark never runs out
of budget; nothing else is changed. So the default quota leases apply (``stores/lease.py``: one
quota script per 16 admitted requests per process, growing to one per 256 under load);
``quota.lease_requests=0`` through the benchmarks' ``--set`` runs the script for every request.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gatekeeper.demo import DATA, DemoKeys  # noqa: E402
from tests.support import RedisServer, free_port, wait_port  # noqa: E402

ENTITY = "fjord-research"
CLIENT_IP = "84.208.20.110"
SUBMIT_PATH = "/slurm/v0.0.41/job/submit"
READ_PATH = "/slurm/v0.0.41/jobs"
UPSTREAM_BODY = '{"job_id":4242,"step_id":"batch","job_submit_user_msg":"","errors":[]}'

SLURM_JOB: dict[str, Any] = {
    "job": {
        "name": "bench-train",
        "partition": "h100",
        "nodes": "1",
        "tres_per_node": "gres/gpu:h100:8",
        "time_limit": {"set": True, "infinite": False, "number": 60},
        "current_working_directory": "/home/bench",
        "environment": ["PATH=/usr/bin", "OMP_NUM_THREADS=8"],
    },
    "script": "#!/bin/bash\nsrun python train.py --epochs 1\n",
}


def machine() -> dict[str, str]:
    """The machine description every results file carries."""
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break

    def out(cmd: list[str]) -> str:
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (p.stdout + p.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"

    import aiohttp
    import uvloop

    return {
        "host": os.uname().nodename,
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
        "aiohttp": aiohttp.__version__,
        "uvloop": uvloop.__version__,
        "nginx": out(["nginx", "-v"]),
        "wrk": out(["wrk", "-v"]),
        "redis": out(["redis-server", "--version"]),
    }


class Stack:
    """Starts and stops the benchmark's processes; one temp folder holds every file.

    ``remove_folder``: ``close`` also deletes the folder (a full run leaves over a GB of audit
    files in it); callers that made the folder with ``TemporaryDirectory`` leave it False.
    """

    def __init__(self, tmp: Path, *, remove_folder: bool = False) -> None:
        self.tmp = tmp
        self.remove_folder = remove_folder
        self.procs: list[subprocess.Popen[bytes]] = []
        self.redis: RedisServer | None = None
        self.keys: DemoKeys | None = None
        self.upstream_port = 0
        self.nginx_proxy_port = 0

    # ---------------------------------------------------------------- nginx
    def start_nginx(self, workers: int = 2) -> None:
        """nginx: the fixed upstream (small JSON) and a keep-alive ``proxy_pass`` to it."""
        self.upstream_port, self.nginx_proxy_port = free_port(), free_port()
        d = self.tmp / "nginx"
        d.mkdir(exist_ok=True)
        os.chmod(d, 0o777)
        conf = f"""
worker_processes {workers};
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  keepalive_requests 10000000;
  upstream app {{ server 127.0.0.1:{self.upstream_port}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{self.upstream_port} reuseport;
    default_type application/json;
    location / {{ return 200 '{UPSTREAM_BODY}'; }}
  }}
  server {{
    listen 127.0.0.1:{self.nginx_proxy_port} reuseport;
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""
        (d / "nginx.conf").write_text(conf)
        self._spawn(["nginx", "-c", str(d / "nginx.conf"), "-p", str(d)], "nginx")
        wait_port(self.upstream_port)
        wait_port(self.nginx_proxy_port)

    @property
    def upstream_url(self) -> str:
        return f"http://127.0.0.1:{self.upstream_port}"

    # ---------------------------------------------------------------- redis
    def start_redis(self) -> str:
        self.redis = RedisServer().start()
        return self.redis.url

    # ---------------------------------------------------------------- bare proxy
    def start_bare(self, workers: int, *, cpu_affinity: str = "none") -> int:
        port = free_port()
        self._spawn(
            [sys.executable, str(ROOT / "bench" / "bare_proxy.py"), "--port", str(port),
             "--upstream", self.upstream_url, "--workers", str(workers),
             "--cpu-affinity", cpu_affinity],
            f"bare-w{workers}",
        )  # fmt: skip
        wait_port(port)
        time.sleep(0.3 * workers)  # let forked workers bind too
        return port

    # ---------------------------------------------------------------- gate
    def prepare_gate_inputs(self, registry_size: int) -> dict[str, Any]:
        """Keys, the bench policy pack and the entity sources, shared by every gate config."""
        self.keys = DemoKeys(self.tmp)
        pol = self.tmp / "policies"
        pol.mkdir(exist_ok=True)
        src = ROOT / "policies"
        shutil.copy(src / "country-groups.yaml", pol / "country-groups.yaml")
        text = (src / "us-remote-access.yaml").read_text()
        text, n = re.subn(
            r"(foreign-monthly: \{unit: tpp_hours, limit: )[0-9.e+]+", r"\g<1>1.0e+15", text
        )
        if n != 1:
            raise RuntimeError("could not raise the foreign-monthly limit in the US pack copy")
        (pol / "us-remote-access.yaml").write_text(text)
        sources: list[dict[str, Any]] = [{"path": str(DATA / "entities.yaml")}]
        if registry_size > 0:
            sys.path.insert(0, str(ROOT / "bench"))
            from ownership_scale import generate

            ftm = self.tmp / f"registry-{registry_size}.ftm.jsonl"
            generate(str(ftm), registry_size)
            sources.append({"path": str(ftm), "format": "ftm"})
        return {"sources": sources, "policy_file": str(pol / "us-remote-access.yaml")}

    def gate_config(
        self,
        name: str,
        inputs: dict[str, Any],
        *,
        workers: int,
        redis_url: str,
        sets: list[str] | None = None,
    ) -> tuple[Path, dict[str, Any]]:
        """The bench gate's config (``sets``: ``KEY=YAML`` overrides, applied), written to a file."""
        assert self.keys is not None
        from gatekeeper.demo import AUDIENCE, ISSUER

        cfg: dict[str, Any] = {
            "listen": {"host": "127.0.0.1", "port": free_port()},
            "admin": {"host": "127.0.0.1", "port": free_port()},
            "workers": workers,
            "trusted_proxies": ["127.0.0.1/32"],
            "identity": {
                "issuers": [
                    {
                        "issuer": ISSUER,
                        "audiences": [AUDIENCE],
                        "jwks_file": str(self.keys.jwks_path),
                        "algorithms": ["RS256"],
                        "claims": {"tenant": "org_id", "entity": "entity_id"},
                    }
                ]
            },
            "entities": {"sources": inputs["sources"]},
            "geoip": {"country_db": "builtin", "anonymous_db": str(DATA / "anonymous-ip.mmdb")},
            "policy": {
                "files": [inputs["policy_file"]],
                "gpus": str(ROOT / "policies" / "gpus.yaml"),
                "default_action": "deny",
            },
            "quota": {"store": redis_url, "key_prefix": f"gk-{name}"},
            "audit": {
                "durability": "fsync",
                "signing_key": str(self.keys.seal_key_path),
                "replica": name,
                "sinks": [{"type": "file", "path": str(self.tmp / f"audit-{name}.jsonl")}],
            },
            "routes": [
                {
                    "name": "slurm-submit",
                    "match": {
                        "path_prefix": "/slurm/",
                        "methods": ["POST"],
                        "path_regex": "/job/submit$",
                    },
                    "upstream": self.upstream_url,
                    "adapter": "slurm",
                    "gpu_model": "H100-SXM",
                    "max_hours": 168,
                },
                {
                    "name": "slurm-read",
                    "match": {"path_prefix": "/slurm/"},
                    "upstream": self.upstream_url,
                },
            ],
        }
        apply_sets(cfg, sets or [])
        path = self.tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path, cfg

    def start_backends(
        self, registry_size: int, *, nginx_workers: int = 2
    ) -> tuple[str, dict[str, Any]]:
        """nginx (the upstream), a private Redis and the gate inputs: (Redis URL, inputs)."""
        self.start_nginx(workers=nginx_workers)
        redis_url = self.start_redis()
        return redis_url, self.prepare_gate_inputs(registry_size)

    def bench_gate_config(
        self,
        name: str,
        *,
        workers: int,
        registry_size: int,
        sets: list[str] | None = None,
        nginx_workers: int = 1,
    ) -> tuple[Path, dict[str, Any]]:
        """nginx, a private Redis and the bench inputs started; the gate's config written
        (with ``--set`` overrides applied), not yet the gate itself."""
        redis_url, inputs = self.start_backends(registry_size, nginx_workers=nginx_workers)
        return self.gate_config(name, inputs, workers=workers, redis_url=redis_url, sets=sets)

    def start_gate(self, name: str, path: Path, cfg: dict[str, Any]) -> subprocess.Popen[bytes]:
        return self.start_gate_with([sys.executable], name, path, cfg)

    def start_gate_with(
        self,
        python: list[str],
        name: str,
        path: Path,
        cfg: dict[str, Any],
        *,
        timeout_s: float = 180,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """The gate started by ``python`` (a command: e.g. valgrind and its options, then Python),
        from ``cwd``'s ``gatekeeper`` package (another work tree, for an A/B) or this one's."""
        cmd = [*python, "-m", "gatekeeper", "serve", "--config", str(path)]
        proc = self._spawn(cmd, name, cwd=cwd)
        workers = int(cfg["workers"])
        audit = Path(cfg["audit"]["sinks"][0]["path"])
        expect = (
            [audit]
            if workers == 1
            else [audit.with_name(f"{audit.stem}.w{i}{audit.suffix}") for i in range(workers)]
        )
        deadline = time.monotonic() + timeout_s
        while not all(p.exists() for p in expect):
            if proc.poll() is not None:
                # The working folder goes with the stack: say why here, not only in its log.
                tail = (self.tmp / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"gate {name} exited with {proc.returncode}:\n{tail}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"gate {name} did not start")
            time.sleep(0.1)
        wait_port(int(cfg["listen"]["port"]), timeout=timeout_s)
        time.sleep(0.5)
        return proc

    def token(self) -> str:
        assert self.keys is not None
        return self.keys.token(ENTITY, ttl=6 * 3600)

    # ---------------------------------------------------------------- lifecycle
    def _spawn(self, cmd: list[str], name: str, cwd: Path | None = None) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen(
            cmd, cwd=cwd or ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)

    def close(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)
        if self.redis is not None:
            self.redis.stop()
        if self.remove_folder:
            shutil.rmtree(self.tmp, ignore_errors=True)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its threads, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def result_stem(out: Path, stem: str) -> str:
    """``stem``, or ``stem-2``, ``stem-3``, ...: a second run the same day keeps the first's file."""
    n, name = 1, stem
    while (out / f"{name}.md").exists() or (out / f"{name}.json").exists():
        n += 1
        name = f"{stem}-{n}"
    return name


def add_set_option(ap: argparse.ArgumentParser) -> None:
    """``--set KEY=YAML`` (repeatable): the gate config overrides ``apply_sets`` applies."""
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY=YAML",
        help="override a key of the gate's config, e.g. quota.lease_requests=0 (recorded)",
    )  # fmt: skip


def apply_sets(cfg: dict[str, Any], sets: list[str]) -> None:
    """Override gate config keys for an experiment: ``["quota.lease_requests=0", ...]`` (YAML)."""
    for item in sets:
        key, _, value = item.partition("=")
        *parents, leaf = key.split(".")
        node = cfg
        for part in parents:
            node = node[part]
        node[leaf] = yaml.safe_load(value)


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent not idle (all processes, kernel threads, interrupts).

    On a saturated machine throughput follows this per request, including what the proxy makes
    others do: Redis, the kernel's journal and extent-conversion workers after an fsync, ...
    """
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


SWITCH_KEYS = ("main_voluntary", "main_involuntary", "others_voluntary", "others_involuntary")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of a process's main thread ("main") and of its other threads ("others"), and
    of all of them in user space ("user") and in the kernel ("system"); their context switches
    (``SWITCH_KEYS``: a voluntary one is a wait, an involuntary one a preemption) and the seconds
    they were runnable but waited for a CPU ("runqueue", from schedstat)."""
    out = dict.fromkeys(("main", "others", "user", "system", "runqueue", *SWITCH_KEYS), 0.0)
    hz = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            status = (task / "status").read_text()
            schedstat = (task / "schedstat").read_text().split()
        except OSError:
            continue
        user, system = int(fields[11]) / hz, int(fields[12]) / hz
        who = "main" if task.name == str(pid) else "others"
        out[who] += user + system
        out["user"] += user
        out["system"] += system
        out["runqueue"] += int(schedstat[1]) / 1e9
        for line in status.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                out[f"{who}_voluntary"] += int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches:"):
                out[f"{who}_involuntary"] += int(line.split()[1])
    return out


def tree_pids(root: int) -> list[int]:
    """A process and its descendants (the workers of a ``workers: N`` gate)."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True)
    children: dict[int, list[int]] = {}
    for line in out.stdout.splitlines():
        pid, ppid = (int(x) for x in line.split())
        children.setdefault(ppid, []).append(pid)
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo += children.get(pid, [])
    return pids


def job_body() -> bytes:
    return json.dumps(SLURM_JOB, separators=(",", ":")).encode()


def request_headers(token: str) -> list[str]:
    return [
        f"Authorization: Bearer {token}",
        f"X-Forwarded-For: {CLIENT_IP}",
        "Content-Type: application/json",
    ]
