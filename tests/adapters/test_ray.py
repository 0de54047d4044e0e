"""Ray adapter: accelerators in ``entrypoint_resources``, the job agent's path, Serve applications,
and the refusals (400 ``unmeasurable-request`` naming the field) for what cannot be bounded."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from gatekeeper.adapters import measure
from gatekeeper.config import InventoryAccelerators, InventoryEntry, InventoryNode
from gatekeeper.context import R_UNMEASURABLE
from gatekeeper.errors import BadRequest
from gatekeeper.inventory import Inventory, build_inventory

from .helpers import CATALOG, check, route, run

# The declared reading alone (a route opted out of the pool bound; see the pool tests below).
RAY = route("ray", max_hours=48.0, unsafe_ray_without_inventory=True)
SUBMIT = "/api/jobs/"
AGENT = "/api/job_agent/jobs/"
SERVE = "/api/serve/applications/"


def job(**kw: Any) -> dict[str, Any]:
    return {"entrypoint": "python train.py", "submission_id": "raysubmit_1", **kw}


def deployment(num_gpus: Any = 1, **kw: Any) -> dict[str, Any]:
    opts = {"num_cpus": 1} if num_gpus is None else {"num_cpus": 1, "num_gpus": num_gpus}
    return {"name": "Model", "ray_actor_options": opts, **kw}


def serve(*deployments: dict[str, Any], **app: Any) -> dict[str, Any]:
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": "0.0.0.0", "port": 8000},
        "applications": [
            {"name": "app", "route_prefix": "/", "import_path": "model:app",
             "deployments": list(deployments), **app}
        ],
    }  # fmt: skip


MEASURED: list[tuple[str, str, str, Any, float, str | None]] = [
    ("agent-path", "POST", AGENT, job(entrypoint_num_gpus=2), 2, "H100-SXM"),
    ("agent-path-no-slash", "POST", "/api/job_agent/jobs", job(entrypoint_num_gpus=1), 1,
     "H100-SXM"),
    ("typed-with-count", "POST", SUBMIT,
     job(entrypoint_num_gpus=1, entrypoint_resources={"accelerator_type:A100": 0.001}), 1, "A100"),
    ("catalog-named-resource", "POST", SUBMIT, job(entrypoint_resources={"H100": 4}), 4,
     "H100-SXM"),
    ("gpu-plus-named", "POST", SUBMIT,
     job(entrypoint_num_gpus=1, entrypoint_resources={"B200": 2}), 3, "B200"),
    ("cpu-memory-node", "POST", SUBMIT,
     job(entrypoint_num_cpus=2, entrypoint_memory=10**9,
         entrypoint_resources={"CPU": 1, "memory": 1, "node:10.0.0.1": 0.01}), 0, None),
    ("label-selector", "POST", SUBMIT, job(entrypoint_label_selector={"zone": "a"}), 0, None),
    ("serve-replicas", "PUT", SERVE, serve(deployment(1, num_replicas=4)), 4, "H100-SXM"),
    ("serve-fraction", "PUT", SERVE, serve(deployment(0.5, num_replicas=3)), 1.5, "H100-SXM"),
    ("serve-default-one-replica", "PUT", SERVE, serve(deployment(2)), 2, "H100-SXM"),
    ("serve-autoscaling-max", "PUT", SERVE,
     serve(deployment(1, autoscaling_config={"min_replicas": 1, "max_replicas": 10})), 10,
     "H100-SXM"),
    ("serve-auto-with-max", "PUT", SERVE,
     serve(deployment(2, num_replicas="auto", autoscaling_config={"max_replicas": 5})), 10,
     "H100-SXM"),
    ("serve-two-deployments", "PUT", SERVE,
     serve(deployment(1, num_replicas=2), {**deployment(0), "name": "Ingress"}), 2, "H100-SXM"),
    ("serve-two-apps", "PUT", SERVE,
     {"applications": [serve(deployment(1, num_replicas=2))["applications"][0],
                       {**serve(deployment(4))["applications"][0], "name": "b",
                        "route_prefix": "/b"}]}, 6, "H100-SXM"),
    ("serve-accelerator-type", "PUT", SERVE,
     serve({"name": "M", "num_replicas": 2,
            "ray_actor_options": {"num_gpus": 1, "accelerator_type": "A100"}}), 2, "A100"),
    ("serve-bundles-more", "PUT", SERVE,
     serve(deployment(1, num_replicas=2, placement_group_bundles=[{"GPU": 1}, {"GPU": 3}])), 8,
     "H100-SXM"),
    ("serve-bundles-fewer", "PUT", SERVE,
     serve(deployment(2, placement_group_bundles=[{"CPU": 1}])), 2, "H100-SXM"),
    ("serve-resources-gpu", "PUT", SERVE,
     serve({"name": "M", "ray_actor_options": {"num_gpus": 0, "resources": {"GPU": 2}}}), 2,
     "H100-SXM"),
    ("serve-legacy-single-app", "PUT", "/api/serve/deployments/",
     {"import_path": "model:app", "deployments": [deployment(1, num_replicas=3)]}, 3,
     "H100-SXM"),
    ("serve-delete", "DELETE", SERVE, b"", 0, None),
    ("serve-get", "GET", "/api/serve/applications/", b"", 0, None),
    ("package-upload", "PUT", "/api/packages/gcs/_ray_pkg_1.zip", b"PK\x03\x04", 0, None),
    ("agent-stop", "POST", "/api/job_agent/jobs/raysubmit_1/stop", b"", 0, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "body", "gpus", "model"),
    [c[1:] for c in MEASURED],
    ids=[c[0] for c in MEASURED],
)
def test_measured(method: str, path: str, body: Any, gpus: float, model: str | None) -> None:
    result = run(RAY, body, method=method, path=path)
    # a submission or deployment holds for the route's max_hours; other requests ask for nothing
    check(result, gpus, 48 if submits(method, path) else 0, model)


def submits(method: str, path: str) -> bool:
    """Whether a request of ``MEASURED`` submits work (a job or a Serve application) -- work whose
    code may reserve GPUs whatever it declares -- rather than reading, stopping or uploading."""
    return not (method in ("GET", "DELETE") or "/stop" in path or "/packages/" in path)


REFUSED: list[tuple[str, str, str, Any, str]] = [
    ("typed-without-count", "POST", SUBMIT,
     job(entrypoint_resources={"accelerator_type:H100": 0.001}),
     "entrypoint_resources: names an accelerator without a GPU count"),
    ("typed-zero-count", "POST", AGENT,
     job(entrypoint_num_gpus=0, entrypoint_resources={"accelerator_type:H100": 0.001}),
     "entrypoint_resources: names an accelerator without a GPU count"),
    ("custom-resource", "POST", SUBMIT, job(entrypoint_resources={"gpu_slot": 1}),
     "entrypoint_resources[gpu_slot]: custom resource; the gate cannot know what it reserves"),
    ("unknown-job-field", "POST", SUBMIT, job(entrypoint_num_accelerators=8),
     "entrypoint_num_accelerators: field not known to the gate"),
    ("serve-no-deployments", "PUT", SERVE, serve(),
     "applications[0].deployments: not listed: the application's code decides its GPUs"),
    ("serve-num-gpus-unstated", "PUT", SERVE, serve(deployment(None, num_replicas=2)),
     "applications[0].deployments[0].ray_actor_options.num_gpus: not stated: the deployment's "
     "code decides it"),
    ("serve-auto-without-max", "PUT", SERVE, serve(deployment(1, num_replicas="auto")),
     "applications[0].deployments[0].autoscaling_config.max_replicas: an autoscaling deployment "
     "must state its most replicas"),
    ("serve-autoscaling-without-max", "PUT", SERVE,
     serve(deployment(1, autoscaling_config={"min_replicas": 2})),
     "applications[0].deployments[0].autoscaling_config.max_replicas: an autoscaling deployment "
     "must state its most replicas"),
    ("serve-replicas-word", "PUT", SERVE, serve(deployment(1, num_replicas="many")),
     "applications[0].deployments[0].num_replicas: expected a number or 'auto'"),
    ("serve-external-scaler", "PUT", SERVE,
     serve(deployment(1), external_scaler_enabled=True),
     "applications[0].external_scaler_enabled: replicas are set outside Serve"),
    ("serve-unknown-deployment-field", "PUT", SERVE,
     serve(deployment(1, deployment_actors=[{"name": "a", "actor_class": "m:A"}])),
     "applications[0].deployments[0].deployment_actors: field not known to the gate"),
    ("serve-unknown-actor-option", "PUT", SERVE,
     serve({"name": "M", "ray_actor_options": {"num_gpus": 1,
                                               "fallback_strategy": [{"num_gpus": 8}]}}),
     "applications[0].deployments[0].ray_actor_options.fallback_strategy: field not known to "
     "the gate"),
    ("serve-custom-resource", "PUT", SERVE,
     serve({"name": "M", "ray_actor_options": {"num_gpus": 0, "resources": {"big_node": 1}}}),
     "applications[0].deployments[0].ray_actor_options.resources[big_node]: custom resource; "
     "the gate cannot know what it reserves"),
    ("serve-type-without-gpus", "PUT", SERVE,
     serve({"name": "M", "ray_actor_options": {"num_gpus": 0, "accelerator_type": "H100"}}),
     "applications[0].deployments[0].ray_actor_options: names an accelerator without a GPU "
     "count"),
    ("serve-unknown-top-field", "PUT", SERVE, {**serve(deployment(1)), "replicas_everywhere": 1},
     "replicas_everywhere: field not known to the gate"),
    ("serve-scale", "POST", "/api/v1/applications/app/deployments/Model/scale",
     {"target_num_replicas": 100},
     "target_num_replicas: a replica count without what one replica holds"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "body", "message"),
    [c[1:] for c in REFUSED],
    ids=[c[0] for c in REFUSED],
)
def test_refused_as_unmeasurable(method: str, path: str, body: Any, message: str) -> None:
    with pytest.raises(BadRequest) as exc:
        run(RAY, body, method=method, path=path)
    assert exc.value.reason == R_UNMEASURABLE
    assert str(exc.value.detail) == message


HOSTILE: list[tuple[str, str, Any, str, str]] = [
    ("replicas-huge", SERVE, serve(deployment(1, num_replicas=10**9)), "bad-value",
     "applications[0].deployments[0].num_replicas 1e+09 exceeds 10000000"),
    ("replicas-bool", SERVE, serve(deployment(1, num_replicas=True)), R_UNMEASURABLE,
     "applications[0].deployments[0].num_replicas: expected a number or 'auto'"),
    ("num-gpus-string", SERVE, serve(deployment("8")), "bad-value",
     "applications[0].deployments[0].ray_actor_options.num_gpus: expected a non-negative number"),
    ("num-gpus-negative", SERVE, serve(deployment(-1)), "bad-value",
     "applications[0].deployments[0].ray_actor_options.num_gpus: expected a finite non-negative "
     "number"),
    ("deployments-object", SERVE, serve() | {"applications": [{"name": "a", "deployments": {}}]},
     "bad-value", "applications[0].deployments: expected a list"),
    ("deployment-not-object", SERVE, serve("Model"),  # type: ignore[arg-type]
     "bad-value", "applications[0].deployments[0]: expected an object"),
    ("applications-object", SERVE, {"applications": {"a": 1}}, "bad-value",
     "applications: expected a list"),
    ("bundles-not-list", SERVE, serve(deployment(1, placement_group_bundles={"GPU": 8})),
     "bad-value", "applications[0].deployments[0].placement_group_bundles: expected a list"),
    ("resources-not-object", SUBMIT, job(entrypoint_resources=[["GPU", 8]]), "bad-value",
     "entrypoint_resources: expected an object"),
    ("body-array", SERVE, [1], "bad-body", "Ray request must be a JSON object"),
    ("duplicate-key", SERVE, b'{"applications": [], "applications": []}', "duplicate-key",
     "duplicate JSON key 'applications'"),
    ("bad-json", SUBMIT, b"{", "bad-json", None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "body", "reason", "message"),
    [c[1:] for c in HOSTILE],
    ids=[c[0] for c in HOSTILE],
)
def test_hostile_bodies(path: str, body: Any, reason: str, message: str | None) -> None:
    method = "PUT" if path == SERVE else "POST"
    with pytest.raises(BadRequest) as exc:
        run(RAY, body, method=method, path=path)
    assert exc.value.reason == reason
    if message is not None:
        assert str(exc.value.detail) == message


GPU_COUNTS = st.one_of(st.integers(0, 16), st.floats(0, 16, allow_nan=False))


@settings(max_examples=300, deadline=None)
@given(
    num_gpus=GPU_COUNTS,
    replicas=st.one_of(st.none(), st.integers(1, 64)),
    max_replicas=st.one_of(st.none(), st.integers(1, 64)),
    bundles=st.lists(st.dictionaries(st.sampled_from(["GPU", "CPU"]), GPU_COUNTS, max_size=2),
                     max_size=3),
)  # fmt: skip
def test_serve_never_below_what_its_replicas_reserve(
    num_gpus: float, replicas: int | None, max_replicas: int | None, bundles: list[dict[str, float]]
) -> None:
    dep = deployment(num_gpus, placement_group_bundles=bundles)
    if replicas is not None:
        dep["num_replicas"] = replicas
    if max_replicas is not None:
        dep["autoscaling_config"] = {"max_replicas": max_replicas}
    result = run(RAY, serve(dep), method="PUT", path=SERVE)
    most = max(replicas or 1, max_replicas or 0) if max_replicas else (replicas or 1)
    per_replica = max(num_gpus, sum(b.get("GPU", 0) for b in bundles))
    assert result.gpus >= per_replica * most - 1e-9
    if per_replica > 0:
        assert result.gpus > 0  # never zero for a request that reserves GPUs


def _ray_inventory(name: str, *, nodes: int, per_node: int) -> Inventory:
    """An inventory of one Ray cluster of H100 nodes."""
    pool = InventoryEntry(
        name=name,
        scheduler="ray",
        nodes=nodes,
        node=InventoryNode(accelerators=InventoryAccelerators(model="H100-SXM", count=per_node)),
    )
    return build_inventory((pool,), CATALOG)


def test_job_bound_covers_what_its_code_can_reserve() -> None:
    """``entrypoint: python train.py`` with no ``entrypoint_num_gpus``: the driver may call
    ``ray.remote(num_gpus=8)`` and Ray grants it GPUs of the cluster. Measured 0, a D:5-parented
    tenant is forwarded; the bound must be what the cluster (the route's pool) can grant."""
    inventory = _ray_inventory("ray-h100", nodes=4, per_node=8)
    body = b'{"entrypoint": "python train.py"}'
    r = route("ray", max_hours=48.0, inventory="ray-h100")
    c = measure(r, "POST", "/api/jobs/", CIMultiDict(), body, CATALOG, inventory)
    assert c is not None and c.gpus == 32


def test_opted_out_route_says_code_is_unbounded_on_every_decision() -> None:
    c = run(RAY, job(entrypoint_num_gpus=1), path=SUBMIT)
    assert c.gpus == 1 and "ray-code-unbounded" in c.assumptions


def test_without_a_pool_a_ray_request_is_refused() -> None:
    """A route built without the loader's check (no pool, no opt-out) counts nothing declared."""
    with pytest.raises(BadRequest) as e:
        run(route("ray", max_hours=48.0), {"entrypoint": "python train.py"}, path=SUBMIT)
    assert e.value.reason == R_UNMEASURABLE
    assert e.value.detail == "routes.inventory: route 'ray-test' names no Ray inventory pool"


RAY_ROUTE = """
routes:
  - {name: ray-jobs, match: {path_prefix: /api/jobs}, upstream: "http://ray-head:8265",
     adapter: ray, gpu_model: H100-SXM%s}
"""
RAY_POOL = """
inventory:
  - {name: ray-h100, scheduler: ray, nodes: 2, node: {accelerators: {model: H100-SXM, count: 8}}}
"""


@pytest.mark.parametrize(
    ("extra", "pool", "error"),
    [
        ("", "", "routes[0].inventory: Ray route 'ray-jobs' names no inventory pool"),
        (", inventory: ray-h100", RAY_POOL, None),
        (", unsafe_ray_without_inventory: true", "", None),
        (", unsafe_ray_without_inventory: false", "", "routes[0].inventory: Ray route"),
    ],
)
def test_a_ray_route_needs_a_pool_at_start_up(extra: str, pool: str, error: str | None) -> None:
    """The D:5 view: a gate that could forward a Ray job bounded only by what it declares,
    while its code reserves any GPU of the cluster, does not start."""
    from gatekeeper.config import parse_config_text
    from gatekeeper.errors import ConfigError

    text = RAY_ROUTE % extra + pool
    if error is None:
        cfg = parse_config_text(text, "<test>", ".")
        assert cfg.routes[0].adapter == "ray"
        return
    with pytest.raises(ConfigError) as e:
        parse_config_text(text, "<test>", ".")
    message = str(e.value)
    assert error in message and "scheduler: ray" in message, message


def test_opt_out_is_for_ray_routes_only() -> None:
    from gatekeeper.config import parse_config_text
    from gatekeeper.errors import ConfigError

    text = """
routes:
  - {name: s, upstream: "http://s:1", adapter: slurm, unsafe_ray_without_inventory: true}
"""
    with pytest.raises(ConfigError, match="unsafe_ray_without_inventory: only for adapter ray"):
        parse_config_text(text, "<test>", ".")


def test_a_declaration_larger_than_the_pool_is_kept() -> None:
    inventory = _ray_inventory("ray-small", nodes=1, per_node=2)
    r = route("ray", max_hours=48.0, inventory="ray-small")
    body = b'{"entrypoint": "python train.py", "entrypoint_num_gpus": 4}'
    c = measure(r, "POST", SUBMIT, CIMultiDict(), body, CATALOG, inventory)
    assert c is not None and c.gpus == 4
    small = b'{"entrypoint": "python train.py", "entrypoint_num_gpus": 1}'
    c = measure(r, "POST", SUBMIT, CIMultiDict(), small, CATALOG, inventory)
    assert c is not None and c.gpus == 2 and "gpus-from-ray-cluster" in c.assumptions
