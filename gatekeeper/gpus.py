"""The GPU catalog: model names and aliases -> TPP, performance density and the derived ECCN.

``policies/gpus.yaml`` lists models with their TPP, density (or die area, from which density is
computed) and aliases. The ECCN is never typed in: ``classify`` derives it from the 3A090
thresholds of DOMAIN §3 when the file is loaded, so a threshold change is one code change and a
catalog can never claim a class its numbers do not support.

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

# 3A090 thresholds (DOMAIN §3). Bounds written ">=" are inclusive, "<" exclusive.
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


_MODEL_KEYS = {"name", "tpp", "density", "die_area_mm2", "aliases"}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) and f > 0 else None


def _parse_model(path: str, idx: int, item: Any, problems: list[Problem]) -> GpuModel | None:
    where = f"models[{idx}]"
    if not isinstance(item, dict):
        problems.append(Problem(path, line_of(item), where, "must be a mapping"))
        return None
    start = len(problems)
    for key in item:
        if key == "eccn":
            problems.append(
                Problem(
                    path,
                    line_of(item, key),
                    f"{where}.eccn",
                    "the ECCN is derived from tpp and density; remove it",
                )
            )
        elif key not in _MODEL_KEYS:
            problems.append(Problem(path, line_of(item, key), f"{where}.{key}", "unknown key"))
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append(Problem(path, line_of(item, "name"), f"{where}.name", "required string"))
    tpp = _number(item.get("tpp"))
    if tpp is None:
        problems.append(
            Problem(path, line_of(item, "tpp"), f"{where}.tpp", "required positive number")
        )
    density: float | None = None
    if "density" in item:
        density = _number(item["density"])
        if density is None:
            problems.append(
                Problem(path, line_of(item, "density"), f"{where}.density", "positive number")
            )
    area: float | None = None
    if "die_area_mm2" in item:
        area = _number(item["die_area_mm2"])
        if area is None:
            problems.append(
                Problem(path, line_of(item, "die_area_mm2"), f"{where}.die_area_mm2", "positive")
            )
    if tpp is not None and area is not None:
        computed = tpp / area
        if density is None:
            density = round(computed, 2)
        elif abs(computed - density) > _DENSITY_TOLERANCE * density:
            problems.append(
                Problem(
                    path,
                    line_of(item, "density"),
                    f"{where}.density",
                    f"{density} disagrees with tpp / die_area_mm2 = {computed:.2f}",
                )
            )
    if tpp is not None and density is None and TPP_FLOOR <= tpp < TPP_A:
        problems.append(
            Problem(
                path,
                line_of(item, "tpp"),
                where,
                "TPP between 1600 and 4800 needs density or die_area_mm2 to be classified",
            )
        )
    aliases_raw = item.get("aliases", [])
    aliases: list[str] = []
    if not isinstance(aliases_raw, list):
        problems.append(
            Problem(path, line_of(item, "aliases"), f"{where}.aliases", "must be a list")
        )
    else:
        for j, alias in enumerate(aliases_raw):
            if not isinstance(alias, str) or not alias.strip():
                line = aliases_raw.line_of(j) if isinstance(aliases_raw, LocList) else None
                problems.append(Problem(path, line, f"{where}.aliases[{j}]", "must be a string"))
            else:
                aliases.append(alias)
    if len(problems) > start or not isinstance(name, str) or tpp is None:
        return None
    eccn = classify(tpp, density)
    return GpuModel(
        name=name.strip(),
        tpp=tpp,
        density=density,
        eccn=eccn,
        controlled=eccn is not None,
        aliases=tuple(aliases),
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
    seen: dict[str, tuple[str, int | None]] = {}
    for idx, item in enumerate(raw_models):
        model = _parse_model(path, idx, item, problems)
        if model is None:
            continue
        item_line = raw_models.line_of(idx) if isinstance(raw_models, LocList) else None
        for alias in (model.name, *model.aliases):
            key = normalize_name(alias)
            if key in seen and seen[key][0] != model.name:
                other, other_line = seen[key]
                problems.append(
                    Problem(
                        path,
                        item_line,
                        f"models[{idx}]",
                        f"name/alias {alias!r} already used by {other!r} (line {other_line})",
                    )
                )
            seen.setdefault(key, (model.name, item_line))
        models.append(model)
    if problems:
        raise ConfigError(problems)
    with open(path, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()
    return GpuCatalog(tuple(models), str(version), source=path, digest=digest)
