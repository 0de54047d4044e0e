"""CPU time of one Slurm ``measure()`` call, in two modes, for whichever tree it is pointed at.

- same body: the very same submission every call (a pipeline resubmitting one job);
- fresh script: every call a body not seen before, its script's commands below the ``#SBATCH``
  block differing (the block and the job's fields are the same).

Each figure is the least CPU time (``time.process_time``) per call over ``--rounds`` rounds of
``--calls`` calls; a bare ``json.loads`` of the same bodies is measured beside it. The bodies of
the fresh mode are built before timing starts. ``--tree`` measures another work tree's
``gatekeeper`` package (such as an older commit's), so two trees can be compared on the same
machine in the same run:

    .venv/bin/python bench/slurm_measure.py
    /other/tree/.venv/bin/python bench/slurm_measure.py --tree /other/tree
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path


def slurm_body(command: str) -> bytes:
    """A v0.0.41 submission whose batch script ends with ``command`` (``geo_compute.py`` reads it too)."""
    return json.dumps(
        {
            "job": {
                "name": "train",
                "partition": "h100",
                "current_working_directory": "/home/alice",
                "environment": ["PATH=/bin:/usr/bin", "HOME=/home/alice"],
                "tres_per_node": "gres/gpu:h100:8",
                "nodes": "2-4",
                "time_limit": {"set": True, "infinite": False, "number": 720},
                "script": "#!/bin/bash\n#SBATCH --gres=gpu:h100:8\n#SBATCH -N 4\n"
                f"#SBATCH --time=12:00:00\n#SBATCH --array=0-3\n{command}\n",
            }
        }
    ).encode()


def least_cpu_us(call: Callable[[bytes], object], bodies: list[list[bytes]]) -> float:
    """The least CPU µs per call over the rounds (one list of bodies per round)."""
    best = float("inf")
    for round_bodies in bodies:
        gc.collect()
        t0 = time.process_time()
        for body in round_bodies:
            call(body)
        best = min(best, (time.process_time() - t0) / len(round_bodies) * 1e6)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", help="the work tree whose gatekeeper package is measured")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--calls", type=int, default=10_000)
    args = ap.parse_args()
    tree = Path(args.tree).resolve() if args.tree else Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(tree))

    import gatekeeper
    from gatekeeper.adapters import measure
    from gatekeeper.config import RouteConfig
    from gatekeeper.gpus import load_gpu_catalog

    here = Path(gatekeeper.__file__).resolve()
    if tree not in here.parents:
        sys.exit(f"gatekeeper imported from {here}, not from {tree}")
    catalog = load_gpu_catalog(None)
    route = RouteConfig(
        name="s", upstream="http://127.0.0.1:1", adapter="slurm", gpu_model="H100-SXM"
    )
    path = "/slurm/v0.0.41/job/submit"

    def call(body: bytes) -> object:
        return measure(route, "POST", path, {}, body, catalog)

    same = slurm_body("srun python train.py")
    first = call(same)
    rounds, calls = args.rounds, args.calls
    same_bodies = [[same] * calls for _ in range(rounds)]
    fresh_bodies = [
        [slurm_body(f"srun python train.py --seed {r}-{i}") for i in range(calls)]
        for r in range(rounds)
    ]
    if call(slurm_body("srun python train.py --probe")) != first:
        sys.exit("a fresh script measured differently from the same one")
    fresh_again = [
        [slurm_body(f"srun python train.py --seed x{r}-{i}") for i in range(calls)]
        for r in range(rounds)
    ]
    gc.collect()
    gc.freeze()
    print(f"tree {tree} ({here.parent})")
    print(f"  json.loads, same body        {least_cpu_us(json.loads, same_bodies):7.2f} µs")
    print(f"  measure(), same body         {least_cpu_us(call, same_bodies):7.2f} µs")
    print(f"  json.loads, fresh script     {least_cpu_us(json.loads, fresh_again):7.2f} µs")
    print(f"  measure(), fresh script      {least_cpu_us(call, fresh_bodies):7.2f} µs")


if __name__ == "__main__":
    main()
