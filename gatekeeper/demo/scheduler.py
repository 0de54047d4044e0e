"""A stand-in Slurm REST scheduler (``slurmrestd``-shaped) for the demo and docker-compose.

``POST /slurm/v0.0.4x/job/submit`` accepts a job and answers with a job id, ``GET
/slurm/v0.0.4x/jobs`` lists what was accepted, ``GET /slurm/v0.0.4x/job/{id}`` shows one. It keeps
jobs in memory and checks nothing: deciding is the gate's job.
"""

from __future__ import annotations

import argparse
from typing import Any

from aiohttp import web

JOBS: web.AppKey[dict[int, dict[str, Any]]] = web.AppKey("jobs", dict)


async def submit(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except ValueError:
        return web.json_response({"errors": [{"error": "invalid JSON"}]}, status=400)
    job_id = 1000 + len(request.app[JOBS])
    request.app[JOBS][job_id] = {
        "job_id": job_id,
        "tenant": request.headers.get("X-Gatekeeper-Tenant"),
        "entity": request.headers.get("X-Gatekeeper-Entity"),
        "decision_id": request.headers.get("X-Gatekeeper-Decision-Id"),
        "job": body.get("job") if isinstance(body, dict) else None,
    }
    return web.json_response(
        {
            "job_id": job_id,
            "step_id": "batch",
            "job_submit_user_msg": "",
            "errors": [],
            "warnings": [],
        }
    )


async def jobs(request: web.Request) -> web.Response:
    return web.json_response({"jobs": list(request.app[JOBS].values())})


async def job(request: web.Request) -> web.Response:
    job_id = int(request.match_info["id"])
    found = request.app[JOBS].get(job_id)
    if found is None:
        return web.json_response({"errors": [{"error": "unknown job"}]}, status=404)
    return web.json_response({"jobs": [found]})


async def ping(request: web.Request) -> web.Response:
    return web.json_response({"pings": [{"hostname": "demo-slurmctld", "pinged": "UP"}]})


def build_app() -> web.Application:
    app = web.Application(client_max_size=4 << 20)
    app[JOBS] = {}
    app.router.add_post(r"/slurm/{version:v0\.0\.\d+}/job/submit", submit)
    app.router.add_get(r"/slurm/{version:v0\.0\.\d+}/jobs", jobs)
    app.router.add_get(r"/slurm/{version:v0\.0\.\d+}/job/{id:\d+}", job)
    app.router.add_get(r"/slurm/{version:v0\.0\.\d+}/ping", ping)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="stand-in Slurm REST scheduler")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6820)
    args = parser.parse_args()
    web.run_app(build_app(), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
