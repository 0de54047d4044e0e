"""GPU catalog: thresholds, derived ECCNs, aliases, shipped copy, and bad catalog files."""

from __future__ import annotations

import os

import pytest

from gatekeeper.errors import ConfigError
from gatekeeper.gpus import SHIPPED_CATALOG, classify, load_gpu_catalog

from .helpers import CATALOG

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_policies_copy_equals_packaged_copy() -> None:
    with (
        open(os.path.join(REPO, "policies", "gpus.yaml"), "rb") as a,
        open(SHIPPED_CATALOG, "rb") as b,
    ):
        assert a.read() == b.read()


@pytest.mark.parametrize(
    ("tpp", "density", "eccn"),
    [
        (4800, None, "3A090.a"),
        (4799, 1.0, None),
        (4799, 5.92, "3A090.a"),
        (1600, 5.92, "3A090.a"),
        (1599, 100.0, None),
        (2400, 1.6, "3A090.b"),
        (2399, 1.6, None),
        (2400, 1.59, None),
        (1600, 3.2, "3A090.b"),
        (1600, 3.19, None),
        (4000, 5.91, "3A090.b"),
        (2368, 2.91, None),  # H20
        (3000, None, "3A090.a"),  # unknown density in the deciding band: fail closed
        (1000, None, None),
    ],
)
def test_classify_thresholds(tpp: float, density: float | None, eccn: str | None) -> None:
    assert classify(tpp, density) == eccn


@pytest.mark.parametrize(
    ("name", "model", "eccn"),
    [
        ("A100", "A100", "3A090.a"),
        ("NVIDIA-H100-80GB-HBM3", "H100-SXM", "3A090.a"),
        ("nvidia-h100-80gb-hbm3-SHARED", "H100-SXM", "3A090.a"),
        ("gres/gpu:h100", "H100-SXM", "3A090.a"),
        ("H100", "H100-SXM", "3A090.a"),
        ("accelerator_type:H100", "H100-SXM", "3A090.a"),
        ("h100 nvl", "H100-NVL", "3A090.a"),
        ("NVIDIA-H200", "H200-SXM", "3A090.a"),
        ("h20", "H20", None),
        ("B200", "B200", "3A090.a"),
        ("b300", "B300", "3A090.a"),
        ("AMD-Instinct-MI300X-OAM", "MI300X", "3A090.a"),
        ("mi325x", "MI325X", "3A090.a"),
        ("MI355X", "MI355X", "3A090.a"),
        ("NVIDIA-L40S", "L40S", "3A090.a"),
    ],
)
def test_resolve_aliases(name: str, model: str, eccn: str | None) -> None:
    m = CATALOG.resolve(name)
    assert (
        m is not None and m.name == model and m.eccn == eccn and m.controlled is (eccn is not None)
    )


@pytest.mark.parametrize("name", ["H100-PCIe", "h10", "h1000", "", None, "x" * 300, "NVIDIA"])
def test_near_misses_are_unknown(name: str | None) -> None:
    assert CATALOG.resolve(name) is None


def test_catalog_facts() -> None:
    assert CATALOG.highest.name == "B300" and CATALOG.version == "2026-07"
    a100 = CATALOG.resolve("a100")
    assert a100 is not None and a100.density == 6.04
    h100 = CATALOG.resolve("h100")
    assert h100 is not None and h100.tpp == 15_832


def write(tmp_path, text: str) -> str:  # type: ignore[no-untyped-def]
    p = tmp_path / "gpus.yaml"
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "version: 1\nmodels:\n  - name: X\n    tpp: 5000\n    eccn: 3A090.a\n",
            ":5: models[0].eccn: the ECCN is derived",
        ),
        (
            "version: 1\nmodels:\n  - name: X\n    tpp: 3000\n",
            ":4: models[0]: TPP between 1600 and 4800 needs density",
        ),
        (
            "version: 1\nmodels:\n  - name: X\n    tpp: -1\n",
            ":4: models[0].tpp: required positive number",
        ),
        (
            "version: 1\nmodels:\n  - name: X\n    tpp: 5000\n    colour: red\n",
            ":5: models[0].colour: unknown key",
        ),
        (
            "version: 1\nmodels:\n  - {name: X, tpp: 5000, aliases: [x-1]}\n  - {name: Y, tpp: 6000, aliases: [X_1]}\n",
            ":4: models[1]: name/alias 'X_1' already used by 'X'",
        ),
        (
            "version: 1\nmodels:\n  - {name: X, tpp: 15832, density: 10, die_area_mm2: 814}\n",
            "disagrees with tpp / die_area_mm2",
        ),
        ("version: 1\nmodels: []\n", ":2: models: required non-empty list"),
        ("models:\n  - {name: X, tpp: 5000}\n", "version: required string"),
        ("version: 1\nmodels: [\n", "invalid YAML"),
    ],
)
def test_bad_catalog_files(tmp_path, text: str, message: str) -> None:  # type: ignore[no-untyped-def]
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_gpu_catalog(path)
    assert message in str(exc.value)
    assert path in str(exc.value)


def test_density_from_die_area(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cat = load_gpu_catalog(
        write(tmp_path, "version: x\nmodels:\n  - {name: X, tpp: 2000, die_area_mm2: 1000}\n")
    )
    m = cat.resolve("x")
    assert m is not None and m.density == 2.0 and m.eccn is None


def test_missing_catalog_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="cannot read"):
        load_gpu_catalog(str(tmp_path / "nope.yaml"))
