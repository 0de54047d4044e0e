"""Ray -> requested GPUs, model and hours: job submissions and Serve applications.

Measured requests (other methods and paths -- status, logs, stop, delete, package uploads -- ask
for no compute):

- ``POST /api/jobs/`` and the job agent's own ``POST /api/job_agent/jobs/``: the entrypoint's
  reservation. ``entrypoint_num_gpus`` (may be fractional, e.g. 0.5) plus the GPUs named in
  ``entrypoint_resources`` (see *resources* below).
- ``PUT /api/serve/applications/`` (and the single-application ``PUT /api/serve/deployments/`` of
  older releases): for every deployment of every application, the GPUs of one replica times the
  most replicas it may have -- ``num_replicas``, or ``autoscaling_config.max_replicas`` when it
  autoscales. One replica holds ``ray_actor_options.num_gpus`` plus the GPUs of its resources, or
  the GPUs of its ``placement_group_bundles`` if those are more (the replica's actor runs in the
  first bundle; the others are reserved with it).
- ``POST /api/v1/applications/{app}/deployments/{name}/scale`` sets a replica count without saying
  what one replica holds: refused.

Resources (``entrypoint_resources``, ``ray_actor_options.resources``, placement group bundles):
``GPU`` counts as GPUs; ``accelerator_type:<X>`` names the model (several: the most capable) and is
refused where no GPU count goes with it, since the request then lands on accelerator nodes without
saying how many accelerators it may touch; a resource named after a catalogued model (``H100``)
counts that many GPUs of it; ``CPU``, ``memory``, ``object_store_memory`` and ``node:<ip>`` hold no
accelerator. Any other custom resource is refused: a cluster may attach it to GPUs, and the gate
cannot know how many.

Refusals are 400 ``unmeasurable-request`` naming the field path. Fields this adapter does not know
are refused too (a later Ray may add one that reserves accelerators), as are deployments whose GPUs
the configuration leaves to the application's code: an application without a ``deployments`` list,
a deployment without ``ray_actor_options.num_gpus``, ``num_replicas: auto`` without a
``max_replicas``, ``external_scaler_enabled``. Hours: Ray has no time limit in the body, so the
route's ``max_hours`` (a limit the provider enforces) applies.

The code a job runs (or a deployment's replicas run) can start tasks and actors that reserve the
cluster's GPUs without passing the gate, so what the request declares is not a bound of what it
may use. Every job and every Serve application is therefore bounded by the route's Ray pool
(``routes[].inventory``): all its accelerators, of its model, for the route's hours (assumption
``gpus-from-ray-cluster``). A Ray route without a pool is a configuration error, unless it sets
``unsafe_ray_without_inventory``: then only the declared reservations are counted, and every
decision says so (assumption ``ray-code-unbounded``); a route that reaches here with neither (built
without the configuration loader) is refused.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..config import RouteConfig
from ..context import R_UNMEASURABLE, ComputeRequest
from ..errors import BadRequest
from ..gpus import GpuCatalog
from ..inventory import Inventory
from .body import load_json
from .body import sanitize as _label
from .common import MAX_MULTIPLIER, Part, as_list, as_mapping, combine, number, zero
from .submission import Submission

ACCELERATOR_PREFIX = "accelerator_type:"
NO_ACCELERATOR = frozenset({"CPU", "memory", "object_store_memory"})
JOB_FIELDS = frozenset(
    {
        "entrypoint",
        "submission_id",
        "job_id",
        "runtime_env",
        "metadata",
        "entrypoint_num_cpus",
        "entrypoint_num_gpus",
        "entrypoint_memory",
        "entrypoint_resources",
        "entrypoint_label_selector",
    }
)
# Serve's config schema: fields that reserve nothing beyond what is measured here.
SERVE_FIELDS = frozenset(
    {
        "proxy_location",
        "http_options",
        "grpc_options",
        "controller_options",
        "logging_config",
        "tracing_config",
        "applications",
        "target_capacity",  # a percentage of the configured replicas, at most 100
    }
)
APP_FIELDS = frozenset(
    {
        "name",
        "route_prefix",
        "import_path",
        "runtime_env",
        "host",
        "port",
        "deployments",
        "autoscaling_policy",  # decides within min/max_replicas
        "args",
        "logging_config",
        "external_scaler_enabled",
    }
)
DEPLOYMENT_FIELDS = frozenset(
    {
        "name",
        "num_replicas",
        "max_ongoing_requests",
        "max_queued_requests",
        "backpressure_config",
        "user_config",
        "autoscaling_config",
        "graceful_shutdown_wait_loop_s",
        "graceful_shutdown_timeout_s",
        "health_check_period_s",
        "health_check_timeout_s",
        "ray_actor_options",
        "placement_group_bundles",
        "placement_group_strategy",
        "placement_group_bundle_label_selector",
        "max_replicas_per_node",
        "logging_config",
        "request_router_config",
        "gang_scheduling_config",  # schedules the replicas in groups; no more of them
        "rolling_update_percentage",
        "max_surge_percent",
    }
)
ACTOR_FIELDS = frozenset(
    {
        "runtime_env",
        "num_cpus",
        "num_gpus",
        "memory",
        "resources",
        "accelerator_type",
        "label_selector",
    }
)
MAX_APPLICATIONS = 1000
MAX_DEPLOYMENTS = 10_000


def unmeasurable(path: str, why: str) -> BadRequest:
    """The 400 for a field the gate cannot bound from above."""
    return BadRequest(R_UNMEASURABLE, f"{path}: {why}")


def _route_of(method: str, path: str) -> str:
    """Which Ray request this is: ``job``, ``serve``, ``scale`` or ``""`` (no compute)."""
    clean = path.split("?", 1)[0].rstrip("/")
    verb = method.upper()
    if verb == "POST" and (clean.endswith("/api/jobs") or clean.endswith("/api/job_agent/jobs")):
        return "job"
    if verb == "PUT" and (
        clean.endswith("/api/serve/applications") or clean.endswith("/api/serve/deployments")
    ):
        return "serve"
    if verb == "POST" and "/api/v1/applications/" in clean and clean.endswith("/scale"):
        return "scale"
    return ""


def _known_fields(doc: dict[Any, Any], known: frozenset[str], where: str) -> None:
    for key in doc:
        if key not in known:
            # SECURITY: a field we do not know may reserve accelerators: never read it as none
            raise unmeasurable(f"{where}{_label(str(key))}", "field not known to the gate")


def _resources(value: Any, where: str, catalog: GpuCatalog) -> tuple[float, list[str]]:
    """(GPUs, model names) a resource mapping reserves (see the module docstring); the caller
    refuses model names that come without a GPU count."""
    gpus = 0.0
    models: list[str] = []
    for key, amount_raw in as_mapping(value, where).items():
        name = str(key)
        path = f"{where}[{_label(name)}]"
        amount = number(amount_raw, path, allow_str=False)
        if name == "GPU":
            gpus += amount
        elif name.startswith(ACCELERATOR_PREFIX):
            if amount > 0:
                models.append(name[len(ACCELERATOR_PREFIX) :])
        elif name in NO_ACCELERATOR or name.startswith("node:"):
            continue
        elif catalog.resolve(name) is not None:
            gpus += amount
            models.append(name)
        else:
            raise unmeasurable(path, "custom resource; the gate cannot know what it reserves")
    return gpus, models


def _job(doc: dict[Any, Any], route: RouteConfig, catalog: GpuCatalog) -> list[Part]:
    _known_fields(doc, JOB_FIELDS, "")
    gpus = 0.0
    if doc.get("entrypoint_num_gpus") is not None:
        gpus = number(doc["entrypoint_num_gpus"], "entrypoint_num_gpus", allow_str=False)
    extra, models = _resources(doc.get("entrypoint_resources"), "entrypoint_resources", catalog)
    gpus += extra
    if models and gpus <= 0:
        raise unmeasurable("entrypoint_resources", "names an accelerator without a GPU count")
    return [Part(gpus=gpus, hours=route.max_hours, models=tuple(models))]


def _replicas(dep: dict[Any, Any], where: str) -> float:
    """The most replicas a deployment may have."""
    count = dep.get("num_replicas")
    scaling = dep.get("autoscaling_config")
    most = 0.0
    if isinstance(count, int | float) and not isinstance(count, bool):
        most = number(count, f"{where}num_replicas", allow_str=False)
    elif count is not None and count != "auto":
        raise unmeasurable(f"{where}num_replicas", "expected a number or 'auto'")
    if scaling is not None or count == "auto":
        limit = as_mapping(scaling, f"{where}autoscaling_config").get("max_replicas")
        if limit is None:
            raise unmeasurable(
                f"{where}autoscaling_config.max_replicas",
                "an autoscaling deployment must state its most replicas",
            )
        most = max(most, number(limit, f"{where}autoscaling_config.max_replicas", allow_str=False))
    elif count is None:
        most = 1.0  # Serve's default: one replica
    if most > MAX_MULTIPLIER:
        raise BadRequest("bad-value", f"{where}num_replicas {most:g} exceeds {MAX_MULTIPLIER}")
    return most


def _replica_gpus(dep: dict[Any, Any], where: str, catalog: GpuCatalog) -> tuple[float, list[str]]:
    """GPUs and models one replica of a deployment reserves."""
    opts = as_mapping(dep.get("ray_actor_options"), f"{where}ray_actor_options")
    _known_fields(opts, ACTOR_FIELDS, f"{where}ray_actor_options.")
    if opts.get("num_gpus") is None:
        raise unmeasurable(
            f"{where}ray_actor_options.num_gpus", "not stated: the deployment's code decides it"
        )
    gpus = number(opts["num_gpus"], f"{where}ray_actor_options.num_gpus", allow_str=False)
    extra, models = _resources(
        opts.get("resources"), f"{where}ray_actor_options.resources", catalog
    )
    gpus += extra
    if isinstance(opts.get("accelerator_type"), str):
        models.append(opts["accelerator_type"])
    bundles_gpus = 0.0
    for i, bundle in enumerate(as_list(dep.get("placement_group_bundles"),
                                       f"{where}placement_group_bundles")):  # fmt: skip
        more, bundle_models = _resources(bundle, f"{where}placement_group_bundles[{i}]", catalog)
        bundles_gpus += more
        models += bundle_models
    gpus = max(gpus, bundles_gpus)
    if models and gpus <= 0:
        raise unmeasurable(f"{where}ray_actor_options", "names an accelerator without a GPU count")
    return gpus, models


def _serve(doc: dict[Any, Any], route: RouteConfig, catalog: GpuCatalog) -> list[Part]:
    if "applications" in doc:
        _known_fields(doc, SERVE_FIELDS, "")
        apps = as_list(doc["applications"], "applications")
        prefix = "applications"
    else:  # the single-application form
        apps, prefix = [doc], ""
    if len(apps) > MAX_APPLICATIONS:
        raise BadRequest("bad-value", f"more than {MAX_APPLICATIONS} applications")
    parts: list[Part] = []
    for a, app_raw in enumerate(apps):
        at = f"{prefix}[{a}]." if prefix else ""
        app = as_mapping(app_raw, at.rstrip(".") or "body")
        _known_fields(app, APP_FIELDS, at)
        if app.get("external_scaler_enabled"):
            raise unmeasurable(f"{at}external_scaler_enabled", "replicas are set outside Serve")
        deployments = as_list(app.get("deployments"), f"{at}deployments")
        if not deployments:
            raise unmeasurable(
                f"{at}deployments", "not listed: the application's code decides its GPUs"
            )
        if len(deployments) > MAX_DEPLOYMENTS:
            raise BadRequest("bad-value", f"more than {MAX_DEPLOYMENTS} deployments")
        for d, dep_raw in enumerate(deployments):
            where = f"{at}deployments[{d}]."
            dep = as_mapping(dep_raw, where.rstrip("."))
            _known_fields(dep, DEPLOYMENT_FIELDS, where)
            per_replica, models = _replica_gpus(dep, where, catalog)
            gpus = per_replica * _replicas(dep, where)
            parts.append(Part(gpus=gpus, hours=route.max_hours, models=tuple(models)))
    return parts


A_CLUSTER = "gpus-from-ray-cluster"  # the job's code may reserve every GPU of the route's pool
A_UNBOUNDED = "ray-code-unbounded"  # no Ray pool on the route: only declared GPUs are counted


def measure_ray(req: Submission, catalog: GpuCatalog, inventory: Inventory) -> ComputeRequest:
    """Measure a Ray job submission or Serve deployment (see the module docstring)."""
    route, method, path, body = req.route, req.method, req.path, req.body
    kind = _route_of(method, path)
    if not kind:
        return zero()
    if kind == "scale":
        raise unmeasurable("target_num_replicas", "a replica count without what one replica holds")
    doc = load_json(body) if body.strip() else {}
    if not isinstance(doc, dict):
        raise BadRequest("bad-body", "Ray request must be a JSON object")
    parts = _job(doc, route, catalog) if kind == "job" else _serve(doc, route, catalog)
    pool = inventory.entry(route.inventory)
    if pool is None or pool.scheduler != "ray":
        if not route.unsafe_ray_without_inventory:
            # SECURITY: the code may reserve every GPU of a cluster nothing describes
            raise unmeasurable(
                "routes.inventory", f"route {_label(route.name)!r} names no Ray inventory pool"
            )
        measured = combine(parts, route, catalog)
        return replace(measured, assumptions=tuple(sorted({*measured.assumptions, A_UNBOUNDED})))
    # SECURITY: tasks and actors the code starts reserve GPUs the request never names; the
    # cluster bounds them (a declaration larger than the cluster can never be granted, and is
    # kept as the larger figure)
    if sum(p.gpus for p in parts) <= pool.accelerators:
        hours = min(route.max_hours, pool.max_hours) if pool.max_hours else route.max_hours
        parts = [Part(pool.accelerators, hours, (pool.model.name,), (A_CLUSTER,))]
    return combine(parts, route, catalog)
