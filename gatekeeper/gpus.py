"""The accelerator catalog: model names and aliases -> TPP, performance density, derived ECCN.

``policies/gpus.yaml`` (shipped as ``gatekeeper/data/gpus.yaml``) lists accelerators with the
datasheet they come from, their dense (no sparsity) peak tensor rates per precision, the die area
and aliases. Nothing derived is typed in: TPP is computed here as the maximum over precisions of
rate x bit length (2 x MacTOPS x bit length), density as TPP / die area, and the ECCN by
``classify`` from the 3A090 thresholds, so a threshold change is one code change and a catalog
can never claim a class its figures do not support. ``docs/gpus.md`` lists every row.

Alias matching is exact after normalisation (case-folded; ``_`` and spaces read as ``-``; the
``gres/gpu:``, ``gpu:`` and ``accelerator_type:`` prefixes and the Kubernetes ``-SHARED`` and
``-MIG-<profile>`` suffixes removed). There is deliberately no prefix or fuzzy matching: a near-miss
must fall through to "unknown" (treated as the catalog's highest TPP), never to a weaker part.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, Problem
from .memo import remember
from .yamlsrc import LocDict, LocList, line_of, load_located

# 3A090 thresholds. Bounds written ">=" are inclusive, "<" exclusive.
TPP_A = 4800.0
TPP_FLOOR = 1600.0
DENSITY_A = 5.92
TPP_B_LOW = 2400.0
DENSITY_B_LOW = 1.6
DENSITY_B_ALT = 3.2

ECCN_A = "3A090.a"
ECCN_B = "3A090.b"

# Density given and density computed from die area must agree to within this relative error.
_DENSITY_TOLERANCE = 0.01

SHIPPED_CATALOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "gpus.yaml")


def classify(tpp: float, density: float | None) -> str | None:
    """ECCN of a chip with this TPP and performance density, or ``None`` when not 3A090.

    - 3A090.a: TPP >= 4800, or TPP >= 1600 and density >= 5.92.
    - 3A090.b: TPP in [2400, 4800) with density in [1.6, 5.92), or TPP >= 1600 with density in
      [3.2, 5.92).

    An unknown density in the band where it decides the class (TPP in [1600, 4800)) yields
    ``3A090.a``: fail closed (the catalog loader refuses such entries; only ad-hoc callers see it).
    The ".b is for data-centre parts" qualifier is not modelled: every catalogued part is one.
    """
    if not math.isfinite(tpp) or tpp >= TPP_A:
        return ECCN_A
    if tpp < TPP_FLOOR:
        return None
    if density is None or not math.isfinite(density):
        return ECCN_A  # SECURITY: unknown density in the deciding band -> strictest class
    if density >= DENSITY_A:
        return ECCN_A
    if tpp >= TPP_B_LOW and DENSITY_B_LOW <= density < DENSITY_A:
        return ECCN_B
    if DENSITY_B_ALT <= density < DENSITY_A:
        return ECCN_B
    return None


@dataclass(frozen=True, slots=True)
class GpuModel:
    """One catalogued GPU; ``eccn`` and ``controlled`` are derived, never read from the file."""

    name: str
    tpp: float
    density: float | None
    eccn: str | None
    controlled: bool
    aliases: tuple[str, ...] = ()
    source: str = ""  # the datasheet and the figures the row's numbers come from
    basis: str = ""  # the precision that gives the TPP, e.g. "fp8 1979 x 8"
    die_area_mm2: float | None = None  # None: not published


_PREFIXES = ("gres/gpu:", "gres:gpu:", "gpu:", "accelerator_type:")
_MIG_SUFFIX = re.compile(r"-mig-.*$")


def normalize_name(name: str) -> str:
    """The lookup key of a model name or alias (see the module docstring)."""
    key = name.strip().casefold()
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix) :]
            break
    key = key.replace("_", "-").replace(" ", "-")
    if key.endswith("-shared"):
        key = key[: -len("-shared")]
    return _MIG_SUFFIX.sub("", key)


class GpuCatalog:
    """Models by normalised name and alias; ``highest`` is used for unknown models."""

    __slots__ = ("_by_key", "_resolved", "digest", "highest", "models", "source", "version")

    def __init__(
        self, models: tuple[GpuModel, ...], version: str, source: str = "", digest: str = ""
    ) -> None:
        if not models:
            raise ValueError("a GPU catalog needs at least one model")
        self.models = models
        self.version = version
        self.source = source
        self.digest = digest
        self.highest: GpuModel = max(models, key=lambda m: m.tpp)
        by_key: dict[str, GpuModel] = {}
        for model in models:
            for alias in (model.name, *model.aliases):
                by_key[normalize_name(alias)] = model
        self._by_key = by_key
        # Answers by raw name: clients send the same few spellings, and normalising is most of a
        # lookup's cost (bounded: ``gatekeeper.memo``); names over 256 characters never get here.
        self._resolved: dict[str, GpuModel | None] = {}

    def resolve(self, name: str | None) -> GpuModel | None:
        """The model ``name`` denotes, or ``None`` when it is unknown (or ``None``)."""
        if name is None or not isinstance(name, str) or len(name) > 256:
            return None
        resolved = self._resolved
        try:
            return resolved[name]
        except KeyError:
            pass
        model = self._by_key.get(normalize_name(name))
        remember(resolved, name, model, len(name), 256)
        return model

    def __len__(self) -> int:
        return len(self.models)


_MODEL_KEYS = {"name", "source", "dense", "die_area_mm2", "density", "aliases"}

# Bit length of each precision a datasheet quotes a dense tensor rate for. TF32 counts as 32 bits,
# the width of its operands in memory: the larger reading, so TPP is never understated.
PRECISION_BITS = {
    "fp64": 64,
    "fp32": 32,
    "tf32": 32,
    "fp16": 16,
    "bf16": 16,
    "fp8": 8,
    "int8": 8,
    "fp6": 6,
    "fp4": 4,
    "int4": 4,
}
# The die area of a part whose vendor publishes none: its density is unknown, and a part whose
# class depends on density is then classed 3A090.a (fail closed).
UNPUBLISHED = "unpublished"

MAX_MODELS = 1000
MAX_NAME_LEN = 64
MAX_ALIASES = 64
MAX_SOURCE_LEN = 2000
MAX_RATE = 1e7  # dense T(FL)OPS per precision: far above any chip, below absurd


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) and f > 0 else None


def tpp_of(dense: dict[str, float]) -> tuple[float, str]:
    """TPP of a part with these dense rates (T(FL)OPS by precision), and the precision giving it.

    TPP = 2 x MacTOPS x bit length = TOPS x bit length, the maximum over precisions.
    """
    best, basis = 0.0, ""
    for precision, rate in dense.items():
        tpp = rate * PRECISION_BITS[precision]
        if tpp > best:
            best, basis = tpp, f"{precision} {rate:g} x {PRECISION_BITS[precision]}"
    return best, basis


class _Row:
    """Problem reporting for one ``models[i]`` entry."""

    def __init__(self, path: str, idx: int, item: LocDict, problems: list[Problem]) -> None:
        self.path, self.where, self.item, self.problems = path, f"models[{idx}]", item, problems

    def err(self, key: str | None, message: str) -> None:
        where = f"{self.where}.{key}" if key else self.where
        line = line_of(self.item, key) if key else line_of(self.item)
        self.problems.append(Problem(self.path, line, where, message))


def _parse_dense(row: _Row, raw: Any) -> dict[str, float] | None:
    if not isinstance(raw, dict) or not raw:
        row.err("dense", "required mapping of precision to dense T(FL)OPS")
        return None
    dense: dict[str, float] = {}
    for precision, value in raw.items():
        key = f"dense.{precision}"
        line = line_of(raw, precision)
        if precision not in PRECISION_BITS:
            known = ", ".join(PRECISION_BITS)
            row.problems.append(
                Problem(row.path, line, f"{row.where}.{key}", f"unknown precision (one of {known})")
            )
            continue
        rate = _number(value)
        if rate is None or rate > MAX_RATE:
            row.problems.append(
                Problem(row.path, line, f"{row.where}.{key}", f"positive number up to {MAX_RATE:g}")
            )
            continue
        dense[precision] = rate
    return dense if len(dense) == len(raw) else None


def _parse_aliases(row: _Row, raw: Any) -> list[str]:
    if not isinstance(raw, list):
        row.err("aliases", "must be a list")
        return []
    if len(raw) > MAX_ALIASES:
        row.err("aliases", f"at most {MAX_ALIASES} aliases")
        return []
    aliases: list[str] = []
    for j, alias in enumerate(raw):
        if not isinstance(alias, str) or not alias.strip() or len(alias) > MAX_NAME_LEN:
            line = raw.line_of(j) if isinstance(raw, LocList) else None
            row.problems.append(
                Problem(
                    row.path,
                    line,
                    f"{row.where}.aliases[{j}]",
                    f"must be a string of 1 to {MAX_NAME_LEN} characters",
                )
            )
        else:
            aliases.append(alias)
    return aliases


def _parse_model(
    path: str, idx: int, item: Any, problems: list[Problem], line: int | None
) -> GpuModel | None:
    if not isinstance(item, LocDict):
        problems.append(Problem(path, line, f"models[{idx}]", "must be a mapping"))
        return None
    row = _Row(path, idx, item, problems)
    start = len(problems)
    for key in item:
        if key in ("eccn", "tpp"):
            row.err(key, f"the {key.upper()} is derived from the datasheet figures; remove it")
        elif key not in _MODEL_KEYS:
            row.err(key, "unknown key")
    name = item.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LEN:
        row.err("name", f"required string of 1 to {MAX_NAME_LEN} characters")
    source = item.get("source")
    if not isinstance(source, str) or not source.strip() or len(source) > MAX_SOURCE_LEN:
        row.err("source", f"required: the datasheet and figures used (1 to {MAX_SOURCE_LEN} chars)")
    dense = _parse_dense(row, item.get("dense"))
    tpp, basis = tpp_of(dense) if dense else (None, "")
    area: float | None = None
    area_raw = item.get("die_area_mm2")
    if "die_area_mm2" in item and area_raw != UNPUBLISHED:
        area = _number(area_raw)
        if area is None:
            row.err("die_area_mm2", f"positive number, or {UNPUBLISHED!r}")
    density: float | None = None
    if "density" in item:
        density = _number(item["density"])
        if density is None:
            row.err("density", "positive number")
    if tpp is not None and area is not None:
        computed = tpp / area
        if density is None:
            density = computed  # exact: rounding could carry a part across a threshold
        elif abs(computed - density) > _DENSITY_TOLERANCE * density:
            row.err("density", f"{density} disagrees with TPP / die_area_mm2 = {computed:.2f}")
    if (
        tpp is not None
        and density is None
        and "die_area_mm2" not in item
        and TPP_FLOOR <= tpp < TPP_A
    ):
        row.err(
            None,
            f"TPP {tpp:g} is between 1600 and 4800: its class needs die_area_mm2 (or"
            f" {UNPUBLISHED!r}, which classes it 3A090.a)",
        )
    aliases = _parse_aliases(row, item.get("aliases", []))
    if len(problems) > start or not isinstance(name, str) or tpp is None:
        return None
    # SECURITY: a density that is not known where it decides the class gives 3A090.a.
    eccn = classify(tpp, density)
    return GpuModel(
        name=name.strip(),
        tpp=tpp,
        density=density,
        eccn=eccn,
        controlled=eccn is not None,
        aliases=tuple(aliases),
        source=" ".join(str(source).split()),
        basis=basis,
        die_area_mm2=area,
    )


def load_gpu_catalog(path: str | None = None) -> GpuCatalog:
    """Load and validate a catalog file (``None``: the one shipped with gatekeeper).

    Every problem is collected and raised at once as a ``ConfigError`` with ``file:line``.
    """
    path = path or SHIPPED_CATALOG
    doc = load_located(path)
    problems: list[Problem] = []
    if not isinstance(doc, LocDict):
        raise ConfigError([Problem(path, line_of(doc, None, 1), "", "must be a mapping")])
    for key in doc:
        if key not in ("version", "models"):
            problems.append(Problem(path, doc.line_of(key), key, "unknown key"))
    version = doc.get("version")
    if not isinstance(version, str | int | float) or isinstance(version, bool) or version == "":
        problems.append(Problem(path, doc.line_of("version"), "version", "required string"))
    raw_models = doc.get("models")
    models: list[GpuModel] = []
    if not isinstance(raw_models, list) or not raw_models:
        problems.append(Problem(path, doc.line_of("models"), "models", "required non-empty list"))
        raw_models = []
    elif len(raw_models) > MAX_MODELS:
        problems.append(Problem(path, doc.line_of("models"), "models", f"at most {MAX_MODELS}"))
        raw_models = []
    seen: dict[str, tuple[str, int, int | None]] = {}  # key -> (model name, row, line)
    for idx, item in enumerate(raw_models):
        item_line = raw_models.line_of(idx) if isinstance(raw_models, LocList) else None
        model = _parse_model(path, idx, item, problems, item_line)
        if model is None:
            continue
        for alias in (model.name, *model.aliases):
            key = normalize_name(alias)
            # SECURITY: two rows answering to one name would make the lookup order decide.
            if key in seen and seen[key][1] != idx:
                other, _, other_line = seen[key]
                problems.append(
                    Problem(
                        path,
                        item_line,
                        f"models[{idx}]",
                        f"name/alias {alias!r} already used by {other!r} (line {other_line})",
                    )
                )
            seen.setdefault(key, (model.name, idx, item_line))
        models.append(model)
    if problems:
        raise ConfigError(problems)
    with open(path, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()
    return GpuCatalog(tuple(models), str(version), source=path, digest=digest)
