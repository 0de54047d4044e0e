"""A real Slurm cluster on loopback for conformance tests: munged, slurmdbd, slurmctld, one slurmd
and slurmrestd from Debian's packages, all under one private temporary directory.

The cluster: one node that really registers (``n1``, served by the one slurmd) and more nodes
declared ``State=CLOUD`` whose address is a loopback port nobody listens on. slurmctld allocates
jobs on the cloud nodes, asks the (no-op) resume program to boot them, and the jobs then wait in
CONFIGURING with ``gres_detail`` naming the GPUs granted on every node -- so multi-node and
whole-node allocations can be read back without running anything. Every node declares
``gpu:h100:8`` and ``shard:32`` with placeholder device files (shards need ``File=`` on the GPU
lines).

Accounting (slurmdbd on the machine's MariaDB, in a database of the lab's own) is there because
slurmctld only puts ``gres/gpu=N`` in a pending job's requested TRES when
``AccountingStorageTRES`` names it and an accounting storage records it.

Runs as root without cgroups (``proctrack/linuxproc``, ``task/none``). munged wants o+x on every
parent of its socket and a short socket path, hence the short directory under /tmp.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gatekeeper.inventory_import import split_gres
from tests.conformance.common import Lab, processes_with_env
from tests.support import free_port, wait_port

BINARIES = ("munged", "slurmdbd", "slurmctld", "slurmd", "slurmrestd", "scontrol", "squeue")
GPUS_PER_NODE = 8
SHARDS_PER_NODE = 32
GPU_MODEL = "h100"
REST_VERSIONS = ("v0.0.38", "v0.0.37", "v0.0.36")
MYSQL_HOST = "127.0.0.1"
MYSQL_PORT = 3306


def missing_binaries() -> list[str]:
    """The lab's programs that are not installed (empty when the lab can run)."""
    return [name for name in BINARIES if shutil.which(name) is None]


@dataclass
class Partition:
    """One partition of the lab: its name and node names (Slurm host-list syntax)."""

    name: str
    nodes: str
    default: bool = False
    extra: str = ""
    max_time: str = "INFINITE"


# n1 registers; c[1-7] are cloud nodes that never boot. "gpu" holds all eight nodes, "small" one
# cloud node, "shared" two cloud nodes that may be shared between jobs, "whole" two cloud nodes
# that only ever go to one job at a time.
PARTITIONS = (
    Partition("gpu", "n1,c[1-7]", default=True),
    Partition("small", "c7"),
    Partition("shared", "c[5-6]", extra="OverSubscribe=YES:4"),
    Partition("whole", "c[3-4]", extra="OverSubscribe=EXCLUSIVE", max_time="1-12:00:00"),
)
CLOUD_NODES = 7
NODES = 1 + CLOUD_NODES


@dataclass
class Granted:
    """What slurmctld records for a job: GPUs in total, nodes, the model and where it was read."""

    gpus: int
    nodes: int
    model: str | None
    source: str
    shards: int = 0
    state: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    # a heterogeneous job's components, each read on its own (the totals above are their sums)
    components: list[Granted] = field(default_factory=list, repr=False)


class SlurmLabError(RuntimeError):
    """A lab daemon did not start or a client command failed (the message carries its log)."""


class SlurmLab(Lab):
    """The cluster; ``start()`` brings every daemon up, ``stop()`` takes them down and cleans up."""

    def __init__(self, *, accounting: bool = True, private_database: bool = False) -> None:
        self.accounting = accounting
        self.private_database = private_database
        # SECURITY: a private, short directory (munged refuses long socket paths), o+x so munged
        # accepts its parents; nothing in it is shared with the machine's own daemons.
        self.dir = Path(tempfile.mkdtemp(prefix="gksl", dir="/tmp"))
        os.chmod(self.dir, 0o711)
        self.cluster = "gk" + secrets.token_hex(3)
        self.database = f"gk_slurm_{self.cluster}"
        self.ctld_port = free_port()
        self.slurmd_port = free_port()
        self.dbd_port = free_port()
        self.rest_port = free_port()
        self.db_port = MYSQL_PORT  # the machine's MariaDB, else a private one (_start_database)
        self.dead_port = free_port()  # the cloud nodes' address: nothing ever listens there
        self.hostname = socket.gethostname().split(".")[0]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._token: str | None = None
        self._token_at = 0.0

    # ------------------------------------------------------------------ paths and environment

    @property
    def conf(self) -> Path:
        return self.dir / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.dir / "m.sock"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env["SLURM_CONF"] = str(self.conf)
        env.pop("SLURM_JWT", None)
        env.update(extra)
        return env

    # ------------------------------------------------------------------ configuration

    def _write_configs(self) -> None:
        d = self.dir
        for sub in ("state", "spool", "log", "dev", "munge"):
            (d / sub).mkdir(mode=0o700, exist_ok=True)
        for i in range(GPUS_PER_NODE):
            (d / "dev" / f"nvidia{i}").touch()
        key = d / "munge" / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
        jwt = d / "jwt.key"
        jwt.write_bytes(secrets.token_bytes(32))
        jwt.chmod(0o600)
        log = d / "log"
        lines = [
            f"ClusterName={self.cluster}",
            f"SlurmctldHost={self.hostname}(127.0.0.1)",
            f"SlurmctldPort={self.ctld_port}",
            f"SlurmdPort={self.slurmd_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            f"AuthInfo=socket={self.munge_socket}",
            "CredType=cred/munge",
            "AuthAltTypes=auth/jwt",
            f"AuthAltParameters=jwt_key={jwt}",
            f"StateSaveLocation={d / 'state'}",
            f"SlurmdSpoolDir={d / 'spool'}",
            f"SlurmctldPidFile={d / 'slurmctld.pid'}",
            f"SlurmdPidFile={d / 'slurmd.pid'}",
            f"SlurmctldLogFile={log / 'slurmctld.log'}",
            f"SlurmdLogFile={log / 'slurmd.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            # no cgroups here: the lab runs in a container as root
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "MpiDefault=none",
            "MailProg=/bin/true",
            "SwitchType=switch/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "GresTypes=gpu,shard",
            # without this each submission waits ~3 s for the batch scheduler
            "SchedulerParameters=batch_sched_delay=0",
            "ReturnToService=2",
            "SlurmdParameters=config_overrides",
            "SlurmctldTimeout=300",
            "SlurmdTimeout=3600",
            "MessageTimeout=30",
            # cloud nodes: the resume program does nothing, so their jobs wait in CONFIGURING
            "ResumeProgram=/bin/true",
            "SuspendProgram=/bin/true",
            "SuspendTime=3600",
            "ResumeTimeout=3600",
            "SuspendTimeout=1",
            "TreeWidth=64",
            # list powered-down cloud nodes too (slurmrestd's node listing hides them otherwise)
            "PrivateData=cloud",
            "MaxArraySize=100001",
            "MaxJobCount=100000",
            "MinJobAge=2",
        ]
        if self.accounting:
            lines += [
                "AccountingStorageType=accounting_storage/slurmdbd",
                "AccountingStorageHost=127.0.0.1",
                f"AccountingStoragePort={self.dbd_port}",
                # the munge socket slurmctld signs its accounting connection with
                f"AccountingStoragePass={self.munge_socket}",
                "AccountingStorageTRES=gres/gpu,gres/shard,gres/gpu:h100",
            ]
        node = f"CPUs=64 Boards=1 SocketsPerBoard=2 CoresPerSocket=32 ThreadsPerCore=1 RealMemory=512000 Gres=gpu:{GPU_MODEL}:{GPUS_PER_NODE},shard:{SHARDS_PER_NODE}"
        lines.append(
            f"NodeName=n1 NodeHostname={self.hostname} NodeAddr=127.0.0.1 Port={self.slurmd_port} {node}"
        )
        lines.append(
            f"NodeName=c[1-{CLOUD_NODES}] NodeAddr=127.0.0.1 Port={self.dead_port} State=CLOUD {node}"
        )
        for part in PARTITIONS:
            default = " Default=YES" if part.default else ""
            lines.append(
                f"PartitionName={part.name} Nodes={part.nodes}{default} MaxTime={part.max_time} State=UP {part.extra}".rstrip()
            )
        self.conf.write_text("\n".join(lines) + "\n")
        gres = [
            f"NodeName=n1,c[1-{CLOUD_NODES}] Name=gpu Type={GPU_MODEL} File={d / 'dev'}/nvidia[0-{GPUS_PER_NODE - 1}]",
            f"NodeName=n1,c[1-{CLOUD_NODES}] Name=shard Count={SHARDS_PER_NODE}",
        ]
        (d / "gres.conf").write_text("\n".join(gres) + "\n")
        if self.accounting:
            dbd = d / "slurmdbd.conf"
            dbd.write_text(
                "\n".join(
                    [
                        "AuthType=auth/munge",
                        f"AuthInfo=socket={self.munge_socket}",
                        "DbdHost=localhost",
                        "DbdAddr=127.0.0.1",
                        f"DbdPort={self.dbd_port}",
                        "SlurmUser=root",
                        f"PidFile={d / 'slurmdbd.pid'}",
                        f"LogFile={log / 'slurmdbd.log'}",
                        "DebugLevel=info",
                        "StorageType=accounting_storage/mysql",
                        f"StorageHost={MYSQL_HOST}",
                        f"StoragePort={self.db_port}",
                        "StorageUser=root",
                        f"StorageLoc={self.database}",
                    ]
                )
                + "\n"
            )
            dbd.chmod(0o600)

    # ------------------------------------------------------------------ daemons

    def _spawn(self, name: str, args: list[str], **env: str) -> None:
        out = open(self.dir / "log" / f"{name}.out", "wb")  # noqa: SIM115 - the child keeps it
        try:
            self.procs[name] = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, env=self.env(**env), cwd=self.dir
            )
        finally:
            out.close()

    def log(self, name: str) -> str:
        text = ""
        for path in (self.dir / "log" / f"{name}.log", self.dir / "log" / f"{name}.out"):
            if path.exists():
                text += path.read_text(errors="replace")[-4000:]
        return text

    def _wait(self, name: str, ready: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise SlurmLabError(f"{name} exited {proc.returncode}:\n{self.log(name)}")
            if ready():
                return
            time.sleep(0.1)
        raise SlurmLabError(f"{name} not ready after {timeout}s:\n{self.log(name)}")

    def _start_database(self) -> None:
        """Use the MariaDB on 127.0.0.1:3306 when there is one; else start a private mariadbd
        (no grant tables: it listens on loopback only and lives as long as the lab)."""
        if _listening(MYSQL_PORT) and not self.private_database:
            return
        if shutil.which("mariadbd") is None or shutil.which("mariadb-install-db") is None:
            raise SlurmLabError(f"no MariaDB on {MYSQL_HOST}:{MYSQL_PORT} and no mariadbd")
        self.db_port = free_port()
        data = self.dir / "db"
        out = subprocess.run(
            ["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root",
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if out.returncode != 0:
            raise SlurmLabError(f"mariadb-install-db exited {out.returncode}: {out.stderr[-2000:]}")
        self._spawn(
            "mariadbd",
            ["mariadbd", "--no-defaults", f"--datadir={data}", f"--port={self.db_port}",
             "--bind-address=127.0.0.1", f"--socket={self.dir / 'db.sock'}", "--user=root",
             "--skip-grant-tables", "--skip-log-bin", "--innodb-buffer-pool-size=32M"],
        )  # fmt: skip
        self._wait("mariadbd", lambda: _listening(self.db_port), 120)

    def _start(self) -> None:
        if self.accounting:
            self.dir.joinpath("log").mkdir(mode=0o700)
            self._start_database()
        self._write_configs()
        d = self.dir
        self._spawn(
            "munged",
            ["munged", "-F", "--force", f"--socket={self.munge_socket}",
             f"--key-file={d / 'munge' / 'munge.key'}", f"--pid-file={d / 'munge' / 'munged.pid'}",
             f"--log-file={d / 'log' / 'munged.log'}", f"--seed-file={d / 'munge' / 'seed'}",
             "--num-threads=2"],
        )  # fmt: skip
        self._wait("munged", self.munge_socket.exists, 30)
        if self.accounting:
            self._spawn("slurmdbd", ["slurmdbd", "-D"])
            self._wait("slurmdbd", lambda: _listening(self.dbd_port), 120)
        self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._wait("slurmctld", lambda: _listening(self.ctld_port), 60)
        self._spawn("slurmd", ["slurmd", "-D", "-N", "n1", "-f", str(self.conf)])
        self._wait("slurmd", self._n1_idle, 90)
        self._start_rest()

    def _start_rest(self) -> None:
        self._spawn(
            "slurmrestd",
            ["slurmrestd", "-f", str(self.conf), "-a", "rest_auth/jwt",
             "-s", ",".join(f"openapi/{v}" for v in REST_VERSIONS),
             f"127.0.0.1:{self.rest_port}"],
            SLURMRESTD_SECURITY="disable_user_check",
            SLURM_JWT="daemon",
        )  # fmt: skip
        self._wait("slurmrestd", lambda: _listening(self.rest_port), 60)

    def restart_rest_if_dead(self, grace: float = 10.0) -> bool:
        """Start slurmrestd again if it died (22.05's v0.0.36 plugin crashes on some invalid
        ``gres`` values); True when it had died. Waits up to ``grace`` seconds for a process that
        is going down to be gone."""
        proc = self.procs["slurmrestd"]
        deadline = time.monotonic() + grace
        while proc.poll() is None and not _listening(self.rest_port):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        if proc.poll() is None:
            return False
        self._start_rest()
        return True

    def _n1_idle(self) -> bool:
        out = subprocess.run(
            ["sinfo", "-h", "-n", "n1", "-o", "%T"],
            capture_output=True, text=True, env=self.env(), timeout=30,
        )  # fmt: skip
        return out.returncode == 0 and out.stdout.strip() in ("idle", "mixed", "allocated")

    def stop(self) -> None:
        """Cancel every job, stop every daemon (slurmrestd first, munged last), end what they left
        behind (a job's slurmstepd and script), drop the database, remove the directory."""
        ctld = self.procs.get("slurmctld")
        if ctld is not None and ctld.poll() is None:
            with contextlib.suppress(SlurmLabError, subprocess.TimeoutExpired):
                self.cancel_all()
        for name in ("slurmrestd", "slurmd", "slurmctld", "slurmdbd", "munged", "mariadbd"):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        # a job that ran on n1 may leave its slurmstepd (which outlives slurmd) and script
        for pid in self.leftovers():
            with contextlib.suppress(OSError):
                os.kill(pid, 9)
        if self.accounting and self.db_port == MYSQL_PORT:
            subprocess.run(
                ["mysql", "-h", MYSQL_HOST, "-P", str(MYSQL_PORT), "-uroot",
                 "-e", f"DROP DATABASE IF EXISTS `{self.database}`"],
                capture_output=True, timeout=60, check=False,
            )  # fmt: skip
        shutil.rmtree(self.dir, ignore_errors=True)

    def leftovers(self) -> list[int]:
        """Processes still running with this lab's ``SLURM_CONF`` in their environment (the
        daemons' children inherit it: slurmstepd and job scripts)."""
        return processes_with_env("SLURM_CONF", str(self.conf))

    # ------------------------------------------------------------------ clients

    def run(self, *args: str, timeout: float = 60) -> str:
        """Run a Slurm client command against the lab; its stdout (raises on failure)."""
        out = subprocess.run(
            list(args), capture_output=True, text=True, env=self.env(), timeout=timeout
        )
        if out.returncode != 0:
            raise SlurmLabError(f"{' '.join(args)} exited {out.returncode}: {out.stderr.strip()}")
        return out.stdout

    def token(self) -> str:
        """A JWT for root from ``scontrol token`` (renewed every ten minutes)."""
        if self._token is None or time.monotonic() - self._token_at > 600:
            out = self.run("scontrol", "token", "lifespan=7200")
            self._token = out.strip().split("=", 1)[1]
            self._token_at = time.monotonic()
        return self._token

    def rest_headers(self) -> dict[str, str]:
        return {"X-SLURM-USER-NAME": "root", "X-SLURM-USER-TOKEN": self.token()}

    def request(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """One HTTP request with the lab's credentials; (status, parsed JSON or the raw text)."""
        hdrs = {"Content-Type": "application/json", **self.rest_headers(), **(headers or {})}
        req = urllib.request.Request(url, data=body, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode("utf-8", "replace")

    def submit_via(
        self, url: str, body: dict[str, Any] | bytes, version: str = "v0.0.38"
    ) -> tuple[int, Any]:
        """POST a job body to ``url`` (slurmrestd itself, or a gate in front of it)."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.request("POST", f"{url}/slurm/{version}/job/submit", data)

    @staticmethod
    def job_id(answer: Any) -> int | None:
        """The job id in a slurmrestd submit answer (None when it refused the job)."""
        if isinstance(answer, dict) and isinstance(answer.get("job_id"), int):
            return int(answer["job_id"])
        return None

    def job_record(self, job_id: int, version: str = "v0.0.38") -> dict[str, Any]:
        """slurmctld's record of the job, as slurmrestd serves it (``GET .../job/{id}``; the
        22.05 clients have no ``--json``)."""
        status, answer = self.request("GET", f"{self.rest_url}/slurm/{version}/job/{job_id}")
        jobs = answer.get("jobs") if isinstance(answer, dict) else None
        if status != 200 or not jobs:
            raise SlurmLabError(f"no record of job {job_id}: {status} {answer}")
        return dict(jobs[0])

    def show_job(self, job_id: int) -> str:
        """``scontrol show job -d`` for the job (for messages: the per-node GRES lines)."""
        return self.run("scontrol", "show", "job", "-d", str(job_id))

    def granted(self, job_id: int) -> Granted:
        """GPUs slurmctld gave the job (allocated, from ``gres_detail``) or, while it is pending,
        that it requested (its requested TRES). An array job's record shows one task: the total
        is that times the number of tasks."""
        rec = self.job_record(job_id)
        members = _het_members(rec)
        if len(members) > 1:  # a heterogeneous job: every component's GPUs
            parts = [self._granted(rec if m == job_id else self.job_record(m)) for m in members]
            first = parts[0]
            return Granted(sum(p.gpus for p in parts), sum(p.nodes for p in parts), first.model,
                           first.source, sum(p.shards for p in parts), first.state, rec,
                           parts)  # fmt: skip
        return self._granted(rec)

    def _granted(self, rec: dict[str, Any]) -> Granted:
        tasks = array_tasks(rec)
        model = None
        detail = rec.get("gres_detail") or []
        if detail:
            gpus = shards = 0
            for entry in detail:
                g, s, m = parse_gres_detail(str(entry))
                gpus += g
                shards += s
                model = model or m
            nodes = int(rec.get("node_count") or len(detail))
            return Granted(gpus * tasks, nodes, model, "gres_detail", shards * tasks,
                           _state(rec), rec)  # fmt: skip
        tres = parse_tres(str(rec.get("tres_alloc_str") or ""))
        source = "tres_alloc_str"
        if not tres:
            tres = parse_tres(str(rec.get("tres_req_str") or ""))
            source = "tres_req_str"
        gpus = int(tres.get("gres/gpu", 0))
        for key in tres:
            if key.startswith("gres/gpu:"):
                model = key.split(":", 1)[1]
        nodes = int(tres.get("node", rec.get("node_count") or 0))
        return Granted(gpus * tasks, nodes, model, source, int(tres.get("gres/shard", 0)) * tasks,
                       _state(rec), rec)  # fmt: skip

    def wait_allocated(self, job_id: int, timeout: float = 30) -> Granted:
        """Wait until slurmctld has allocated the job (CONFIGURING or RUNNING) and read its GRES;
        the last reading if it is still pending after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.granted(job_id)
            if got.source == "gres_detail" or "CONFIGURING" in got.state or "RUNNING" in got.state:
                return got
            if time.monotonic() > deadline:
                return got
            time.sleep(0.2)

    def node_states(self) -> dict[str, str]:
        """Every node's state as ``scontrol show nodes`` gives it (cloud nodes included)."""
        out = self.run("scontrol", "show", "nodes", "-o")
        states: dict[str, str] = {}
        for line in out.splitlines():
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            if "NodeName" in fields:
                states[fields["NodeName"]] = fields.get("State", "")
        return states

    def wait_nodes_free(self, timeout: float = 60) -> None:
        """Wait until no node is allocated, completing or changing power state, so that the
        next job can have any node."""
        busy = ("ALLOCATED", "MIXED", "COMPLETING", "POWERING_UP", "POWERING_DOWN", "CONFIGURING")
        deadline = time.monotonic() + timeout
        forced: set[str] = set()
        while True:
            states = self.node_states()
            pending = {n: s for n, s in states.items() if any(b in s for b in busy)}
            if not pending:
                return
            # a cloud node whose job was cancelled while it "booted" stays POWERING_UP until
            # ResumeTimeout: power it down (SuspendTimeout is 1 s) so the next job can have it
            stuck = [n for n, s in pending.items()
                     if "POWERING_UP" in s and "IDLE" in s and n not in forced]  # fmt: skip
            if stuck:
                self.run("scontrol", "update", f"nodename={','.join(stuck)}",
                         "state=POWER_DOWN_FORCE")  # fmt: skip
                forced.update(stuck)
            if time.monotonic() > deadline:
                raise SlurmLabError(f"nodes still busy after {timeout}s: {pending}")
            time.sleep(0.2)

    def job_ids(self) -> list[int]:
        out = self.run("squeue", "-h", "-o", "%A")
        return [int(x) for x in out.split()]

    def cancel_all(self) -> None:
        """Cancel every job of the lab and wait until none is left in the queue (a heterogeneous
        job is cancelled through its leader, an array through its array job id)."""
        deadline = time.monotonic() + 60
        while True:
            out = self.run("squeue", "-h", "-t", "PD,CF,R,S,CG", "-o", "%i")
            ids = sorted({i.split("+")[0].split("_")[0] for i in out.split()})
            if not ids:
                return
            if time.monotonic() > deadline:
                raise SlurmLabError(f"jobs left after scancel: {ids}")
            subprocess.run(["scancel", *ids], capture_output=True, env=self.env(), timeout=60)
            time.sleep(0.2)


def _listening(port: int) -> bool:
    try:
        wait_port(port, timeout=0.05)
    except TimeoutError:
        return False
    return True


def _state(rec: dict[str, Any]) -> str:
    state = rec.get("job_state")
    if isinstance(state, list):
        return ",".join(str(s) for s in state)
    return str(state or "")


def _het_members(rec: dict[str, Any]) -> list[int]:
    """The job ids of a heterogeneous job's components (``het_job_id_set`` ``5-6``), else []."""
    spec = str(rec.get("het_job_id_set") or "")
    ids: list[int] = []
    for part in filter(None, spec.split(",")):
        lo, _, hi = part.partition("-")
        if lo.isdigit():
            ids.extend(range(int(lo), int(hi or lo) + 1))
    return ids


def array_tasks(rec: dict[str, Any]) -> int:
    """The number of tasks of a pending array job (1 for a plain job or one split-off task)."""
    spec = rec.get("array_task_string") or ""
    if not spec:
        return 1
    total = 0
    for part in str(spec).split("%")[0].split(","):
        part = part.strip()
        if not part:
            continue
        step = 1
        if ":" in part:
            part, step_s = part.split(":", 1)
            step = int(step_s)
        if "-" in part:
            lo, hi = part.split("-", 1)
            total += (int(hi) - int(lo)) // step + 1
        else:
            total += 1
    return max(total, 1)


def parse_tres(text: str) -> dict[str, int]:
    """``cpu=1,mem=1M,node=1,billing=1,gres/gpu=8`` -> counts (memory sizes are not needed)."""
    out: dict[str, int] = {}
    for item in text.split(","):
        if "=" not in item:
            continue
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = int(value.strip())
        except ValueError:
            continue
    return out


def parse_gres_detail(text: str) -> tuple[int, int, str | None]:
    """One node's ``gres_detail`` (``gpu:h100:8(IDX:0-7),shard:0``) -> (gpus, shards, model)."""
    gpus = shards = 0
    model = None
    for item in split_gres(text):
        head = item.split("(", 1)[0]
        parts = head.split(":")
        if not parts or not parts[-1].isdigit():
            continue
        count = int(parts[-1])
        if parts[0] == "gpu":
            gpus += count
            if len(parts) == 3:
                model = parts[1]
        elif parts[0] == "shard":
            shards += count
    return gpus, shards, model


if __name__ == "__main__":  # manual use: start the lab, print how to reach it, wait for ^C
    lab = SlurmLab().start()
    print(f"SLURM_CONF={lab.conf}\nslurmrestd: {lab.rest_url}\ntoken: {lab.token()}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        lab.stop()
