"""A real Ray head on loopback for conformance tests (Ray from PyPI, in its own virtualenv).

``ray start --head --num-gpus 8`` in a private temporary directory, every port chosen free on
loopback, a catalogued model declared as a custom resource (``H100``) and the matching
``accelerator_type:H100`` resource. Each job submission creates a job supervisor actor whose
``required_resources`` in the state API (``/api/v0/actors``) are what Ray reserves for the
entrypoint -- shown while the actor is still pending, so infeasible requests read back too. A
driver module on the head's path (``gk_hold``) reserves every GPU of the head from its code, as a
job's code may without declaring anything in its submission.

Ray lives in ``.venv-ray`` (``make ray-tools``): its own pins (grpcio, pydantic, aiohttp) stay out
of the gate's environment, and the tests only drive its command line and HTTP API. The head is
stopped by process id: every process it starts inherits a marker variable, and ``stop()`` ends
the processes carrying this head's marker (``ray stop`` would end every Ray process of the
machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.conformance.common import Lab, processes_with_env
from tests.support import free_port, repo_root

RAY_VENV = repo_root() / ".venv-ray"
RAY = RAY_VENV / "bin" / "ray"
NUM_GPUS = 8
MARKER = "GK_RAY_LAB"
START_ATTEMPTS = 3
SUPERVISOR_PREFIX = "_ray_internal_job_actor_"
# A Serve application the head can import (its directory is on the head's PYTHONPATH): one
# deployment whose resources come from the configuration the test sends.
SERVE_APP = """from ray import serve


@serve.deployment
class Model:
    def __call__(self, request):
        return "ok"


app = Model.bind()
"""
SERVE_MODULE = "gk_serve_app"
# A job's code reserving GPUs its submission never declared: an actor holding every GPU of the
# head (read back by its name while it is pending or alive).
HOLD_MODULE = "gk_hold"
HOLD_ACTOR = "gk_code_hold"
HOLD_APP = f"""import time

import ray

ray.init()


@ray.remote(num_cpus=0, num_gpus={NUM_GPUS})
class Hold:
    pass


hold = Hold.options(name="{HOLD_ACTOR}").remote()
time.sleep(600)
"""
SLEEP = ("sleep", "600")


class RayLabError(RuntimeError):
    """The head did not start, or a Ray command failed (the message carries its output)."""


def ray_missing() -> str | None:
    """Why the lab cannot run here (None when it can)."""
    if not RAY.exists():
        return f"{RAY} not installed (make ray-tools)"
    return None


class RayLab(Lab):
    """A Ray head; ``start()`` brings it up, ``stop()`` ends every process it started."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="gkray"))
        self.gcs_port = free_port()
        self.dashboard_port = free_port()
        self.agent_port = free_port()
        self.marker = str(self.dir)

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def agent_url(self) -> str:
        return f"http://127.0.0.1:{self.agent_port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env[MARKER] = self.marker
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        env["HOME"] = str(self.dir)  # Ray writes ~/.ray; keep it in the lab
        env["PYTHONPATH"] = str(self.dir / "apps")
        return env

    def _start(self) -> None:
        (self.dir / "apps").mkdir()
        (self.dir / "apps" / f"{SERVE_MODULE}.py").write_text(SERVE_APP)
        (self.dir / "apps" / f"{HOLD_MODULE}.py").write_text(HOLD_APP)
        args = [
            str(RAY), "start", "--head", "--disable-usage-stats",
            "--node-ip-address", "127.0.0.1",
            "--port", str(self.gcs_port),
            "--include-dashboard", "true",
            "--dashboard-host", "127.0.0.1",
            "--dashboard-port", str(self.dashboard_port),
            "--dashboard-agent-listen-port", str(self.agent_port),
            "--dashboard-agent-grpc-port", str(free_port()),
            "--runtime-env-agent-port", str(free_port()),
            "--ray-client-server-port", str(free_port()),
            "--node-manager-port", str(free_port()),
            "--object-manager-port", str(free_port()),
            "--metrics-export-port", str(free_port()),
            "--num-cpus", "2",
            "--num-gpus", str(NUM_GPUS),
            "--resources", json.dumps({"H100": NUM_GPUS, "accelerator_type:H100": 1}),
            "--object-store-memory", str(100 * 1024 * 1024),
            "--temp-dir", str(self.dir / "t"),
        ]  # fmt: skip
        # ray start gives the raylet a fixed 30 s to register with the GCS; on a loaded machine
        # that can run out: end what the attempt started and try again
        for attempt in range(START_ATTEMPTS):
            out = subprocess.run(
                args, capture_output=True, text=True, env=self.env(), timeout=180, cwd=self.dir
            )
            if out.returncode == 0:
                break
            self._end_processes()
            if attempt == START_ATTEMPTS - 1:
                raise RayLabError(
                    f"ray start exited {out.returncode} {START_ATTEMPTS} times; last:\n"
                    f"{out.stdout}\n{out.stderr}"
                )
            shutil.rmtree(self.dir / "t", ignore_errors=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                self.get("/api/version")
                self.get("/api/v0/actors?limit=1")
                return
            except (OSError, RayLabError):
                time.sleep(0.5)
        raise RayLabError("the dashboard did not answer within 120 s")

    def processes(self) -> list[int]:
        """Processes carrying this head's marker (every process the head started)."""
        return processes_with_env(MARKER, self.marker)

    def stop(self) -> None:
        """SIGTERM every process of this head, SIGKILL what is left after 5 s, remove the dir.

        The GCS server and the autoscaler monitor outlast SIGTERM by more than 15 s; nothing of
        the head outlives its directory, so they are killed sooner."""
        self._end_processes()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _end_processes(self) -> None:
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            pids = self.processes()
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while pids and time.monotonic() < deadline:
                pids = [p for p in self.processes() if _alive(p)]
                time.sleep(0.2)
            if not pids:
                break

    # ------------------------------------------------------------------ clients

    def get(self, path: str) -> Any:
        try:
            with urllib.request.urlopen(self.dashboard_url + path, timeout=30) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise RayLabError(f"GET {path}: {exc.code} {exc.read()[:500]!r}") from None

    def cli_submit(
        self,
        address: str,
        *options: str,
        headers: dict[str, str] | None = None,
        entrypoint: tuple[str, ...] = SLEEP,
    ) -> tuple[int, str, str | None]:
        """``ray job submit --no-wait OPTIONS -- ENTRYPOINT`` against ``address`` (the gate or
        the dashboard), sending ``headers`` with every request; (exit status, output, submission
        id or None)."""
        extra = ["--headers", json.dumps(headers)] if headers else []
        out = subprocess.run(
            [str(RAY), "job", "submit", "--address", address, "--no-wait", *extra, *options,
             "--", *entrypoint],
            capture_output=True, text=True, env=self.env(), timeout=120, cwd=self.dir,
        )  # fmt: skip
        text = out.stdout + out.stderr
        sid = None
        for word in text.replace("'", " ").split():
            if word.startswith("raysubmit_"):
                sid = word.rstrip(".,")
                break
        return out.returncode, text, sid if out.returncode == 0 else None

    def hold_entrypoint(self) -> tuple[str, ...]:
        """The entrypoint of a job whose code reserves every GPU of the head (``HOLD_ACTOR``)."""
        return (str(RAY_VENV / "bin" / "python"), "-m", HOLD_MODULE)

    def reserved(self, submission_id: str, timeout: float = 60) -> dict[str, float]:
        """The resources Ray reserves for the job's entrypoint: its supervisor actor's
        ``required_resources`` (pending or alive)."""
        return self.actor_resources(SUPERVISOR_PREFIX + submission_id, timeout, dead=True)

    def actor_resources(
        self, name: str, timeout: float = 60, *, dead: bool = False
    ) -> dict[str, float]:
        """``required_resources`` of the actor called ``name`` once it exists: pending or alive,
        or also dead when ``dead``."""
        deadline = time.monotonic() + timeout
        while True:
            answer = self.get("/api/v0/actors?detail=1&limit=10000")
            for actor in answer["data"]["result"]["result"]:
                if actor.get("name") == name and (dead or actor.get("state") != "DEAD"):
                    return {k: float(v) for k, v in (actor.get("required_resources") or {}).items()}
            if time.monotonic() > deadline:
                raise RayLabError(f"no actor {name} after {timeout}s")
            time.sleep(0.3)

    def nodes(self) -> list[dict[str, float]]:
        """``resources_total`` of every live node of the head's cluster."""
        answer = self.get("/api/v0/nodes?detail=1&limit=1000")
        return [
            {k: float(v) for k, v in (n.get("resources_total") or {}).items()}
            for n in answer["data"]["result"]["result"]
            if n.get("state") == "ALIVE"
        ]

    def serve_available(self) -> bool:
        """Whether Ray Serve is installed next to the head (``ray[serve]``)."""
        out = subprocess.run(
            [str(RAY_VENV / "bin" / "python"), "-c", "import ray.serve, fastapi, uvicorn"],
            capture_output=True, env=self.env(), timeout=120,
        )  # fmt: skip
        return out.returncode == 0

    def replicas(self, app: str, deployment: str) -> list[dict[str, float]]:
        """``required_resources`` of every live or pending replica actor of a deployment."""
        class_name = f"ServeReplica:{app}:{deployment}"
        answer = self.get("/api/v0/actors?detail=1&limit=10000")
        return [
            {k: float(v) for k, v in (a.get("required_resources") or {}).items()}
            for a in answer["data"]["result"]["result"]
            if a.get("class_name") == class_name and a.get("state") != "DEAD"
        ]

    def wait_replicas(
        self, app: str, deployment: str, count: int, timeout: float = 120
    ) -> list[dict[str, float]]:
        """The replicas once there are ``count`` of them (the last reading after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.replicas(app, deployment)
            if len(found) == count or time.monotonic() > deadline:
                return found
            time.sleep(0.5)

    def delete_serve(self) -> None:
        """Remove every Serve application and wait until no replica is left."""
        req = urllib.request.Request(f"{self.dashboard_url}/api/serve/applications/",
                                     method="DELETE")  # fmt: skip
        with contextlib.suppress(urllib.error.HTTPError):
            urllib.request.urlopen(req, timeout=60).close()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            actors = self.get("/api/v0/actors?detail=1&limit=10000")["data"]["result"]["result"]
            live = [a for a in actors if str(a.get("class_name", "")).startswith("ServeReplica")
                    and a.get("state") != "DEAD"]  # fmt: skip
            if not live:
                return
            time.sleep(0.5)
        raise RayLabError("Serve replicas still alive 120 s after DELETE")

    def job_ids(self) -> list[str]:
        return [str(j["submission_id"]) for j in self.get("/api/jobs/")]

    def stop_jobs(self) -> None:
        """Stop every job (their supervisors and entrypoints end; their GPUs are released)."""
        for sid in self.job_ids():
            req = urllib.request.Request(f"{self.dashboard_url}/api/jobs/{sid}/stop", method="POST")
            with contextlib.suppress(urllib.error.HTTPError):
                urllib.request.urlopen(req, timeout=30).close()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False


def gpus_of(resources: dict[str, float], models: tuple[str, ...] = ("H100",)) -> float:
    """Accelerators in a Ray resource set: ``GPU`` plus resources named after a model."""
    return resources.get("GPU", 0.0) + sum(resources.get(m, 0.0) for m in models)
