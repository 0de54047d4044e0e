"""The accelerator catalog: thresholds, every row's TPP and class, aliases, unknown models, and
malformed or hostile catalog files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from gatekeeper.adapters.common import Part, combine, combine_one
from gatekeeper.errors import BadRequest, ConfigError
from gatekeeper.gpus import SHIPPED_CATALOG, GpuCatalog, classify, load_gpu_catalog

from .helpers import CATALOG, route

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "accelerators"
A, B = "3A090.a", "3A090.b"


def test_policies_copy_equals_packaged_copy() -> None:
    assert (REPO / "policies" / "gpus.yaml").read_bytes() == Path(SHIPPED_CATALOG).read_bytes()


@pytest.mark.parametrize(
    ("tpp", "density", "eccn"),
    [
        (4800, None, A),
        (4799, 1.0, None),
        (4799, 5.92, A),
        (1600, 5.92, A),
        (1599, 100.0, None),
        (2400, 1.6, B),
        (2399, 1.6, None),
        (2400, 1.59, None),
        (1600, 3.2, B),
        (1600, 3.19, None),
        (4000, 5.91, B),
        (2368, 2.91, None),  # H20
        (3000, None, A),  # unknown density in the deciding band: fail closed
        (1000, None, None),
    ],
)
def test_classify_thresholds(tpp: float, density: float | None, eccn: str | None) -> None:
    assert classify(tpp, density) == eccn


# Every row, worked out by hand from its datasheet figures (docs/gpus.md): TPP, density rounded
# to two places (None: die area unpublished), class.
EXPECTED: dict[str, tuple[float, float | None, str | None]] = {
    "P100-SXM2": (339.2, 0.56, None),
    "P100-PCIe": (300.8, 0.49, None),  # FP64 4.7 x 64 beats FP16 18.7 x 16
    "V100": (2080, 2.55, None),
    "V100-SXM2": (2000, 2.45, None),
    "V100-PCIe": (1792, 2.2, None),
    "V100S-PCIe": (2080, 2.55, None),
    "T4": (1040, 1.91, None),
    "A10": (2000, 3.18, None),
    "A10G": (2000, 3.18, None),
    "A30": (2640, 3.2, B),
    "A40": (2395.2, 3.81, B),
    "RTX-A6000": (2477.6, 3.94, B),
    "A100": (4992, 6.04, A),
    "L4": (1940, 6.59, A),  # caught by density
    "L40": (2896.8, 4.76, B),
    "L40S": (5864, 9.64, A),
    "RTX-4090": (5284.8, 8.68, A),
    "RTX-6000-Ada": (5828, 9.58, A),
    "H100-SXM": (15832, 19.45, A),
    "H100-PCIe": (12104, 14.87, A),
    "H100-NVL": (13368, 16.42, A),
    "H800-SXM": (15832, 19.45, A),
    "H800-PCIe": (12104, 14.87, A),
    "H20": (2368, 2.91, None),
    "H200-SXM": (15832, 19.45, A),
    "H200-NVL": (13368, 16.42, A),
    "GH200": (15832, 19.45, A),
    "B200": (36000, 22.11, A),
    "GB200": (40000, None, A),
    "B300": (56000, None, A),
    "MI100": (2953.6, 3.94, B),
    "MI210": (2899.2, 4.0, B),
    "MI250": (5793.6, 4.0, A),
    "MI250X": (6128, 4.23, A),
    "MI300A": (15689.6, None, A),
    "MI300X": (20919.2, 20.57, A),
    "MI325X": (20919.2, 20.57, A),
    "MI355X": (60398.4, None, A),
    "Gaudi2": (6920, None, A),
    "Gaudi3": (29360, None, A),
    "Trainium": (6080, None, A),
    "Trainium2": (21344, None, A),
    "Inferentia2": (6080, None, A),
    "TPU-v4": (4400, 7.33, A),
    "TPU-v5e": (3152, None, A),  # density unpublished where it decides: fail closed
    "TPU-v5p": (7344, None, A),
    "TPU-v6e": (14688, None, A),
}

BITS = {"fp64": 64, "fp32": 32, "tf32": 32, "fp16": 16, "bf16": 16, "fp8": 8, "int8": 8}
BITS |= {"fp6": 6, "fp4": 4, "int4": 4}


def test_every_row_is_worked_out_and_sourced() -> None:
    assert {m.name for m in CATALOG.models} == set(EXPECTED)
    raw = {row["name"]: row for row in yaml.safe_load(Path(SHIPPED_CATALOG).read_text())["models"]}
    for m in CATALOG.models:
        tpp, density, eccn = EXPECTED[m.name]
        # TPP = max over precisions of the dense rate x bit length, recomputed from the file
        assert max(r * BITS[p] for p, r in raw[m.name]["dense"].items()) == pytest.approx(tpp)
        assert m.tpp == pytest.approx(tpp), m.name
        assert (None if m.density is None else round(m.density, 2)) == density, m.name
        assert m.eccn == eccn and m.controlled is (eccn is not None), m.name
        kinds = ("datasheet", "documentation", "white paper", "whitepaper", "product brief")
        assert any(kind in m.source for kind in kinds), m.name
        assert m.basis and str(BITS[m.basis.split()[0]]) == m.basis.split()[-1]


@pytest.mark.parametrize(
    ("name", "tpp", "density", "eccn"),
    [
        # the reference figures: TPP to within the datasheets' rounding, density to two places
        ("A100", 4992, 6.04, A),
        ("H100-SXM", 15832, 19.45, A),
        ("H100-NVL", 13364, None, A),  # 13,368 here: FP16 1,671/2 x 16 beats FP8 3,341/2 x 8
        ("H200-SXM", 15832, None, A),
        ("H20", 2368, 2.91, None),
        ("B200", 36000, 22.11, A),
        ("B300", 56000, None, A),
        ("MI300X", 20919, 20.57, A),
        ("MI325X", 20919, 20.57, A),
        ("L40S", 5864, 9.6, A),
    ],
)
def test_reference_table(name: str, tpp: float, density: float | None, eccn: str | None) -> None:
    m = CATALOG.resolve(name)
    assert m is not None and m.eccn == eccn
    assert abs(m.tpp - tpp) / tpp < 0.0005
    if density is not None:
        assert m.density is not None and abs(m.density - density) < 0.05


@pytest.mark.parametrize(
    "name", ["V100", "V100-SXM2", "V100-PCIe", "V100S-PCIe", "T4", "P100-SXM2", "P100-PCIe"]
)
def test_older_parts_are_not_controlled(name: str) -> None:
    m = CATALOG.resolve(name)
    assert m is not None and m.eccn is None and not m.controlled


def test_issue_classes() -> None:
    l4, l40s, rtx, h20 = (CATALOG.resolve(n) for n in ("NVIDIA-L4", "l40s", "RTX 4090", "H20"))
    # L4: TPP below 4800 but density above 5.92
    assert l4 is not None and l4.tpp < 4800 and l4.density is not None and l4.density >= 5.92
    assert l4.eccn == A
    assert l40s is not None and l40s.eccn == A and l40s.tpp >= 4800
    # RTX 4090: FP8 (FP16 accumulate) 660.6 dense TFLOPS x 8
    assert rtx is not None and rtx.tpp == pytest.approx(5284.8) and rtx.eccn == A
    # H20: below .a, and below both .b bands (TPP < 2400, density < 3.2)
    assert h20 is not None and h20.eccn is None


def _ray_names() -> list[tuple[str, str | None]]:
    rows = []
    for line in (DATA / "ray_accelerator_types.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, model = line.split("\t")
            rows.append((name, None if model == "-" else model))
    return rows


@pytest.mark.parametrize(("name", "model"), _ray_names())
def test_ray_accelerator_types(name: str, model: str | None) -> None:
    for spelling in (name, f"accelerator_type:{name}"):
        m = CATALOG.resolve(spelling)
        assert (m.name if m else None) == model, spelling


@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("NVIDIA-H100-80GB-HBM3", "H100-SXM"),
        ("nvidia-h100-80gb-hbm3-SHARED", "H100-SXM"),
        ("NVIDIA-H100-80GB-HBM3-MIG-1g.10gb", "H100-SXM"),
        ("NVIDIA-H100-PCIe", "H100-PCIe"),
        ("NVIDIA H100 NVL", "H100-NVL"),
        ("Tesla-V100-SXM2-16GB", "V100-SXM2"),
        ("Tesla-V100-PCIE-32GB", "V100-PCIe"),
        ("Tesla-T4", "T4"),
        ("Tesla-P100-PCIE-16GB", "P100-PCIe"),
        ("NVIDIA-L4", "L4"),
        ("NVIDIA-A10G", "A10G"),
        ("NVIDIA-A100-SXM4-80GB", "A100"),
        ("NVIDIA-A100-PCIE-80GB", "A100"),
        ("NVIDIA-A100-80GB-PCIe", "A100"),
        ("NVIDIA-GeForce-RTX-4090", "RTX-4090"),
        ("NVIDIA-RTX-6000-Ada-Generation", "RTX-6000-Ada"),
        ("NVIDIA-GB200", "GB200"),
        ("NVIDIA-B300-SXM6-AC", "B300"),
        ("NVIDIA-GH200-480GB", "GH200"),
        ("gres/gpu:h100", "H100-SXM"),
        ("gpu:a100", "A100"),
        ("a100", "A100"),
        ("v100", "V100"),
        ("nvidia-tesla-t4", "T4"),  # GKE accelerator label
        ("tpu-v5-lite-podslice", "TPU-v5e"),  # GKE TPU label
        ("AMD-Instinct-MI300X-OAM", "MI300X"),
        ("h20", "H20"),
        ("mi355x", "MI355X"),
    ],
)
def test_scheduler_and_driver_names(name: str, model: str) -> None:
    m = CATALOG.resolve(name)
    assert m is not None and m.name == model


@pytest.mark.parametrize(
    "name",
    ["H100-PCI", "h10", "h1000", "", None, "x" * 300, "NVIDIA", "v1000", "tpu-v4x", "mi300", "l4s"],
)
def test_near_misses_are_unknown(name: str | None) -> None:
    assert CATALOG.resolve(name) is None


def test_the_highest_part_prices_unknown_models() -> None:
    assert CATALOG.highest.name == "MI355X" and CATALOG.version == "2"
    assert all(m.tpp <= CATALOG.highest.tpp for m in CATALOG.models)


# ----------------------------------------------------------------------------- unknown models


def test_a_known_model_is_measured_as_itself() -> None:
    c = combine([Part(2, 3, ("Tesla-T4",))], route("slurm"), CATALOG)
    assert c.gpu_model == "T4" and c.model_known and not c.controlled and c.assumptions == ()
    assert c.tpp_hours == 6 * 1040


def test_an_uncatalogued_name_is_carried_not_replaced_by_the_route_default() -> None:
    # the route's default is an H100; the partition names a part the catalog does not know
    c = combine([Part(4, 2, ("rtx-8000",))], route("slurm", gpu_model="H100-SXM"), CATALOG)
    assert c.gpu_model == "rtx-8000"
    assert c.model_known is False and c.assumptions == ("unknown-gpu-model",)
    # priced as the top part: an upper bound for TPP-hours quotas
    assert c.tpp == CATALOG.highest.tpp and c.tpp_hours == 8 * CATALOG.highest.tpp
    assert c.controlled and c.eccn == A


def test_an_uncatalogued_route_default_is_carried() -> None:
    c = combine([Part(1, 1)], route("slurm", gpu_model="A16"), CATALOG)
    assert c.gpu_model == "A16" and c.model_known is False and c.tpp == CATALOG.highest.tpp


def test_one_unknown_candidate_makes_the_model_unknown() -> None:
    c = combine([Part(1, 1, ("l4", "mystery\x00gpu"))], route("slurm"), CATALOG)
    assert c.gpu_model == "mystery\x00gpu" and c.model_known is False
    assert c.tpp == CATALOG.highest.tpp


def test_a_long_unknown_name_is_carried_bounded() -> None:
    c = combine([Part(1, 1, ("g" * 10_000,))], route("slurm"), CATALOG)
    assert c.model_known is False and c.gpu_model is not None
    assert 0 < len(c.gpu_model) <= 256 and set(c.gpu_model) == {"g"}


def test_unknown_gpu_deny_refuses() -> None:
    with pytest.raises(BadRequest) as exc:
        combine([Part(1, 1, ("rtx-8000",))], route("slurm", unknown_gpu="deny"), CATALOG)
    assert exc.value.reason == "unknown-gpu-model"


def test_one_part_remembered_is_combined_afresh_for_other_objects() -> None:
    # ``combine_one`` answers again only for the very part, route and catalog it combined
    part = Part(2, 3)
    plain, a16 = route("slurm"), route("slurm", gpu_model="A16")
    denying = route("slurm", gpu_model=None, unknown_gpu="deny")
    t4 = CATALOG.resolve("T4")
    assert t4 is not None
    other_catalog = GpuCatalog((t4,), "t4 only")  # no H100: the route's default is unknown there
    for _ in range(2):
        assert combine_one(part, plain, CATALOG) == combine([part], plain, CATALOG)
        assert combine_one(part, a16, CATALOG) == combine([part], a16, CATALOG)
        assert combine_one(part, plain, other_catalog) == combine([part], plain, other_catalog)
        with pytest.raises(BadRequest) as exc:
            combine_one(part, denying, CATALOG)
        assert exc.value.reason == "unknown-gpu-model"
    assert combine_one(part, plain, CATALOG) is combine_one(part, plain, CATALOG)
    assert combine_one(part, plain, other_catalog).gpu_model == "H100-SXM"
    assert combine_one(part, plain, other_catalog).tpp == t4.tpp  # priced as that catalog's top
    assert combine_one(Part(2, 3), plain, CATALOG).gpu_model == "H100-SXM"


# --------------------------------------------------------------------------- catalog files


def write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "gpus.yaml"
    p.write_text(text)
    return str(p)


ROW = "  - name: X\n    source: X datasheet\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            f"version: 1\nmodels:\n{ROW}    dense: {{fp16: 400}}\n    eccn: 3A090.a\n",
            ":6: models[0].eccn: the ECCN is derived from the datasheet figures; remove it",
        ),
        (
            f"version: 1\nmodels:\n{ROW}    dense: {{fp16: 400}}\n    tpp: 6400\n",
            ":6: models[0].tpp: the TPP is derived from the datasheet figures; remove it",
        ),
        (
            f"version: 1\nmodels:\n{ROW}    dense: {{fp16: 200}}\n",
            ":3: models[0]: TPP 3200 is between 1600 and 4800: its class needs die_area_mm2 (or"
            " 'unpublished', which classes it 3A090.a)",
        ),
        (
            f"version: 1\nmodels:\n{ROW}    dense: {{fp16: -1}}\n",
            ":5: models[0].dense.fp16: positive number up to 1e+07",
        ),
        (
            f"version: 1\nmodels:\n{ROW}    dense: {{fp16: .nan}}\n",
            ":5: models[0].dense.fp16: positive number up to 1e+07",
        ),
        (
            f"version: 1\nmodels:\n{ROW}    dense: {{fp16: true}}\n",
            ":5: models[0].dense.fp16: positive number up to 1e+07",
        ),
        (
            f"version: 1\nmodels:\n{ROW}    dense: {{fp16: 1e9}}\n",
            ":5: models[0].dense.fp16: positive number up to 1e+07",
        ),
        (
            f"version: 1\nmodels:\n{ROW}    dense: {{fp12: 400}}\n",
            ":5: models[0].dense.fp12: unknown precision (one of fp64, fp32, tf32, fp16, bf16,"
            " fp8, int8, fp6, fp4, int4)",
        ),
        (
            f"version: 1\nmodels:\n{ROW}    dense: [400]\n",
            ":5: models[0].dense: required mapping of precision to dense T(FL)OPS",
        ),
        (
            f"version: 1\nmodels:\n{ROW}",
            ":3: models[0].dense: required mapping of precision to dense T(FL)OPS",
        ),
        (
            "version: 1\nmodels:\n  - name: X\n    dense: {fp16: 400}\n",
            ":3: models[0].source: required: the datasheet and figures used (1 to 2000 chars)",
        ),
        (
            "version: 1\nmodels:\n  - name: X\n    source: ' '\n    dense: {fp16: 400}\n",
            ":4: models[0].source: required: the datasheet and figures used (1 to 2000 chars)",
        ),
        (
            f"version: 1\nmodels:\n  - name: X\n    source: {'s' * 2001}\n    dense: {{fp16: 400}}\n",
            ":4: models[0].source: required: the datasheet and figures used (1 to 2000 chars)",
        ),
        (
            f"version: 1\nmodels:\n  - name: {'n' * 65}\n    source: s\n    dense: {{fp16: 400}}\n",
            ":3: models[0].name: required string of 1 to 64 characters",
        ),
        (
            f"version: 1\nmodels:\n{ROW}    dense: {{fp16: 400}}\n    colour: red\n",
            ":6: models[0].colour: unknown key",
        ),
        (
            f"version: 1\nmodels:\n{ROW}    dense: {{fp16: 400}}\n    die_area_mm2: unknown\n",
            ":6: models[0].die_area_mm2: positive number, or 'unpublished'",
        ),
        (
            f"version: 1\nmodels:\n{ROW}    dense: {{fp16: 400}}\n    die_area_mm2: 0\n",
            ":6: models[0].die_area_mm2: positive number, or 'unpublished'",
        ),
        (
            f"version: 1\nmodels:\n{ROW}    dense: {{fp16: 989.5}}\n    die_area_mm2: 814\n"
            "    density: 10\n",
            ":7: models[0].density: 10.0 disagrees with TPP / die_area_mm2 = 19.45",
        ),
        (
            f"version: 1\nmodels:\n{ROW}    dense: {{fp16: 400}}\n    aliases: x\n",
            ":6: models[0].aliases: must be a list",
        ),
        (
            f"version: 1\nmodels:\n{ROW}    dense: {{fp16: 400}}\n    aliases: [a, 7]\n",
            "models[0].aliases[1]: must be a string of 1 to 64 characters",
        ),
        (
            f"version: 1\nmodels:\n{ROW}    dense: {{fp16: 400}}\n    aliases: [{'a' * 65}]\n",
            "models[0].aliases[0]: must be a string of 1 to 64 characters",
        ),
        (
            f"version: 1\nmodels:\n{ROW}    dense: {{fp16: 400}}\n    aliases: ["
            + ", ".join(f"a{i}" for i in range(65))
            + "]\n",
            ":6: models[0].aliases: at most 64 aliases",
        ),
        (
            "version: 1\nmodels:\n"
            "  - {name: X, source: s, dense: {fp16: 400}, aliases: [x-1]}\n"
            "  - {name: Y, source: s, dense: {fp16: 500}, aliases: [X_1]}\n",
            ":4: models[1]: name/alias 'X_1' already used by 'X' (line 3)",
        ),
        ("version: 1\nmodels: []\n", ":2: models: required non-empty list"),
        (
            "version: 1\nmodels:\n"
            + "".join(f"  - {{name: m{i}, source: s, dense: {{fp16: 1}}}}\n" for i in range(1001)),
            ":2: models: at most 1000",
        ),
        ("version: 1\nmodels:\n  - just a string\n", ":3: models[0]: must be a mapping"),
        ("models:\n  - {name: X, source: s, dense: {fp16: 400}}\n", "version: required string"),
        ("version: 1\nmodels: [\n", "invalid YAML"),
        ("- a list\n", "gpus.yaml:1: must be a mapping"),
        (
            "version: 1\nmodels:\n  - {name: X, source: s, dense: {fp16: 400}}\nextra: 1\n",
            ":4: extra: unknown key",
        ),
        (
            "version: 1\nmodels:\n  - &r {name: X, source: s, dense: {fp16: 400}}\n  - *r\n",
            "name/alias 'X' already used by 'X'",
        ),
    ],
)
def test_bad_catalog_files(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_gpu_catalog(path)
    assert message in str(exc.value)
    assert path in str(exc.value)


def test_density_from_die_area_is_exact(tmp_path: Path) -> None:
    # 2000 / 625.5 = 3.197...: rounded to 3.2 it would be 3A090.b; exactly, it is below 3.2
    cat = load_gpu_catalog(
        write(
            tmp_path,
            "version: x\nmodels:\n  - {name: X, source: s, dense: {fp16: 125},"
            " die_area_mm2: 625.5}\n",
        )
    )
    m = cat.resolve("x")
    assert m is not None and m.density == pytest.approx(2000 / 625.5) and m.eccn is None


def test_unpublished_die_area_in_the_deciding_band_fails_closed(tmp_path: Path) -> None:
    cat = load_gpu_catalog(
        write(
            tmp_path,
            "version: x\nmodels:\n  - {name: X, source: s, dense: {int8: 300},"
            " die_area_mm2: unpublished}\n",
        )
    )
    m = cat.resolve("x")
    assert m is not None and m.tpp == 2400 and m.density is None and m.eccn == A


def test_missing_catalog_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_gpu_catalog(str(tmp_path / "nope.yaml"))


def test_docs_list_every_row() -> None:
    doc = (REPO / "docs" / "gpus.md").read_text()
    for m in CATALOG.models:
        line = next((ln for ln in doc.splitlines() if ln.startswith(f"| {m.name} |")), None)
        assert line is not None, m.name
        assert f"{m.tpp:,.1f}".rstrip("0").rstrip(".") in line, (m.name, line)
        assert (m.eccn or "not controlled") in line, (m.name, line)


def test_environment_does_not_change_the_shipped_file() -> None:
    assert os.path.isfile(SHIPPED_CATALOG)
