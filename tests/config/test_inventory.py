"""The ``inventory:`` section: parsing, cross-checks, catalog resolution and look-ups."""

from __future__ import annotations

import pytest

from gatekeeper.config import parse_config_text
from gatekeeper.errors import ConfigError
from gatekeeper.gpus import load_gpu_catalog
from gatekeeper.inventory import EMPTY_INVENTORY, build_inventory

CATALOG = load_gpu_catalog()

GOOD = """
inventory:
  - {name: h100, scheduler: slurm, partitions: [gpu, h100], nodes: 64,
     node: {accelerators: {model: H100-SXM, count: 8}, shards_per_gpu: 4}, max_hours: 168}
  - name: k8s-a100
    scheduler: kubernetes
    node_selector: {nvidia.com/gpu.product: NVIDIA-A100-SXM4-80GB}
    nodes: 16
    node: {accelerators: {model: A100-SXM4-80GB, count: 8}}
routes:
  - {name: s, upstream: "http://127.0.0.1:1", adapter: slurm, inventory: h100}
"""


def test_parse_and_look_up() -> None:
    cfg = parse_config_text(GOOD)
    inv = build_inventory(cfg.inventory, CATALOG)
    assert len(inv) == 2
    h100 = inv.slurm_partition("gpu")
    assert h100 is inv.entry("h100") and h100 is inv.slurm_partition("h100")
    assert h100.model.name == "H100-SXM" and h100.per_node == 8 and h100.accelerators == 512
    assert h100.shards_per_gpu == 4 and h100.max_hours == 168
    assert inv.slurm_partition("cpu") is None and inv.entry(None) is None
    pods = inv.kubernetes_pool({"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", "x": "y"})
    assert [p.name for p in pods] == ["k8s-a100"]
    assert inv.kubernetes_pool({"nvidia.com/gpu.product": "other"}) == []
    assert [p.name for p in inv.for_scheduler("slurm")] == ["h100"]
    assert inv.digest.startswith("sha256:") and inv.digest != EMPTY_INVENTORY.digest
    assert cfg.routes[0].inventory == "h100"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "inventory: [{name: a, scheduler: slurm, nodes: 1,"
            " node: {accelerators: {model: H100-SXM, count: 8}}},"
            " {name: a, scheduler: slurm, nodes: 1,"
            " node: {accelerators: {model: H100-SXM, count: 8}}}]",
            "inventory[1].name: duplicate inventory name 'a'",
        ),
        (
            "inventory: [{name: a, scheduler: lsf, nodes: 1,"
            " node: {accelerators: {model: H100-SXM, count: 8}}}]",
            "inventory[0].scheduler",
        ),
        (
            "inventory: [{name: a, scheduler: slurm, nodes: 0,"
            " node: {accelerators: {model: H100-SXM, count: 8}}}]",
            "inventory[0].nodes",
        ),
        (
            "inventory: [{name: a, scheduler: slurm, nodes: 1}]",
            "inventory[0].node: required key is missing",
        ),
        (
            "inventory: [{name: a, scheduler: slurm, nodes: 1, node_selector: {k: v},"
            " node: {accelerators: {model: H100-SXM, count: 8}}}]",
            "only kubernetes entries select nodes",
        ),
        (
            "inventory: [{name: a, scheduler: kubernetes, nodes: 1, node_selector: {k: [1]},"
            " node: {accelerators: {model: H100-SXM, count: 8}}}]",
            "inventory[0].node_selector.k: must map strings to strings",
        ),
        (
            "inventory: [{name: a, scheduler: slurm, partitions: [p], nodes: 1,"
            " node: {accelerators: {model: H100-SXM, count: 8}}},"
            " {name: b, scheduler: slurm, partitions: [p], nodes: 1,"
            " node: {accelerators: {model: H100-SXM, count: 8}}}]",
            "partition 'p' is already in inventory entry 'a'",
        ),
        (
            "routes: [{name: r, upstream: 'http://127.0.0.1:1', adapter: slurm, inventory: x}]",
            "routes[0].inventory: no inventory entry 'x'",
        ),
        (
            "inventory: [{name: k, scheduler: kubernetes, nodes: 1,"
            " node: {accelerators: {model: H100-SXM, count: 8}}}]\n"
            "routes: [{name: r, upstream: 'http://127.0.0.1:1', adapter: slurm, inventory: k}]",
            "inventory entry 'k' is for kubernetes, the route's adapter is slurm",
        ),
    ],
)
def test_bad_inventory(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config_text(text)
    assert message in str(exc.value)


def test_uncatalogued_model_is_a_start_up_error() -> None:
    cfg = parse_config_text(
        "inventory: [{name: a, scheduler: slurm, nodes: 2,"
        " node: {accelerators: {model: Imaginary-9000, count: 8}}}]"
    )
    with pytest.raises(ConfigError) as exc:
        build_inventory(cfg.inventory, CATALOG)
    assert (
        "inventory[0].node.accelerators.model: 'Imaginary-9000' is not in the GPU catalog"
        in str(exc.value)
    )
