"""Helpers shared by the compute adapters: numbers, Slurm-style times and ranges, and turning
measured parts into one ``ComputeRequest``. Body loading is in ``body.py``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any, NamedTuple, TypeVar

from ..config import RouteConfig
from ..context import R_UNKNOWN_GPU_MODEL, ComputeRequest
from ..errors import BadRequest
from ..gpus import ECCN_A, ECCN_B, GpuCatalog, GpuModel
from ..memo import Memo, remember
from .body import sanitize

MAX_GPUS = 10_000_000.0  # per measured part; far above any real cluster
MAX_HOURS = 1_000_000.0  # ~114 years
MAX_MULTIPLIER = 10_000_000  # nodes, tasks, replicas, array sizes
# A resource name (Kubernetes extended resource, Slurm generic resource) that looks like an
# accelerator: where the gate has no count for it, it is refused, not ignored.
LOOKS_ACCELERATOR = re.compile(r"gpu|tpu|npu|ipu|neuron|gaudi|accelerat|mig-|/xpu|qaic", re.I)
T = TypeVar("T")


# ----------------------------------------------------------------------------- values


def header(headers: Any, name: str) -> str | None:
    """One header value; several different values for the same header are a ``BadRequest``."""
    if headers is None:
        return None
    getall = getattr(headers, "getall", None)
    if getall is not None:
        values = getall(name, [])
        if not values:
            return None
        if len(set(values)) > 1:
            # SECURITY: which copy the upstream reads is not ours to guess
            raise BadRequest("duplicate-header", f"header {name} given more than once")
        return str(values[0])
    value = headers.get(name)
    return None if value is None else str(value)


_NUM = re.compile(r"^\s*\+?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$")


def number(value: Any, what: str, *, allow_str: bool = True) -> float:
    """A finite, non-negative number from a JSON/YAML value (numeric strings allowed)."""
    if isinstance(value, bool):
        raise BadRequest("bad-value", f"{what}: expected a number, got a boolean")
    numeric_str = allow_str and isinstance(value, str) and len(value) <= 64 and _NUM.match(value)
    if isinstance(value, int | float) or numeric_str:
        try:
            result = float(value)
        except OverflowError:
            raise BadRequest("bad-value", f"{what}: number too large") from None
    else:
        raise BadRequest("bad-value", f"{what}: expected a non-negative number")
    if not math.isfinite(result) or result < 0:
        raise BadRequest("bad-value", f"{what}: expected a finite non-negative number")
    return result


def bounded(value: float, limit: float, reason: str, what: str) -> float:
    if value > limit:
        raise BadRequest(reason, f"{what} {value:g} exceeds {limit:g}")
    return value


def optional(value: Any, kind: type[T], what: str, expected: str) -> T | None:
    """``value`` if it is a ``kind``, ``None`` if absent; anything else is a ``BadRequest``."""
    if value is None or isinstance(value, kind):
        return value
    raise BadRequest("bad-value", f"{what}: expected {expected}")


def as_mapping(value: Any, what: str) -> dict[Any, Any]:
    found = optional(value, dict, what, "an object")
    return {} if found is None else found


def as_list(value: Any, what: str) -> list[Any]:
    found = optional(value, list, what, "a list")
    return [] if found is None else found


# ----------------------------------------------------------------------------- Slurm syntax

# Parsed Slurm values by text: clients send the same few spellings (``2-4``, ``12:00:00``) and the
# regex parsers below are a visible share of a submission's cost (bounded: ``gatekeeper.memo``).
_MEMO_TEXT = 64


def parse_slurm_time(text: str) -> float | None:
    """Minutes from a Slurm time string; ``None`` for no limit (see ``_parse_slurm_time``)."""
    return _TIME_MEMO(text)


def parse_node_count(text: str) -> int:
    """The largest node count a Slurm ``--nodes`` value allows (see ``_parse_node_count``)."""
    return _NODES_MEMO(text)


def parse_array_count(text: str) -> int:
    """How many tasks a Slurm ``--array`` spec creates (see ``_parse_array_count``)."""
    return _ARRAY_MEMO(text)


_TIME_PART = re.compile(r"^\d{1,9}$")


def _parse_slurm_time(text: str) -> float | None:
    """Minutes from a Slurm time string; ``None`` for no limit (``UNLIMITED``, ``INFINITE``, 0).

    Accepted: ``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``. Seconds round up to the
    next minute, as Slurm does.
    """
    s = text.strip().lower()
    if s in ("unlimited", "infinite", "-1"):
        return None
    days = 0
    if "-" in s:
        head, s = s.split("-", 1)
        if not _TIME_PART.match(head):
            raise BadRequest("bad-time", f"bad time {sanitize(text)!r}")
        days = int(head)
        fields = s.split(":")
        if not 1 <= len(fields) <= 3 or not all(_TIME_PART.match(f) for f in fields):
            raise BadRequest("bad-time", f"bad time {sanitize(text)!r}")
        nums = [int(f) for f in fields] + [0] * (3 - len(fields))
        hours, minutes, seconds = nums
    else:
        fields = s.split(":")
        if not 1 <= len(fields) <= 3 or not all(_TIME_PART.match(f) for f in fields):
            raise BadRequest("bad-time", f"bad time {sanitize(text)!r}")
        nums = [int(f) for f in fields]
        if len(nums) == 1:
            hours, minutes, seconds = 0, nums[0], 0
        elif len(nums) == 2:
            hours, minutes, seconds = 0, nums[0], nums[1]
        else:
            hours, minutes, seconds = nums
    total = days * 1440 + hours * 60 + minutes + math.ceil(seconds / 60)
    return None if total == 0 else float(total)  # "A time limit of zero ... no time limit"


_NODE_ITEM = re.compile(r"^(\d{1,9})(?:-(\d{1,9}))?(?::\d{1,9})?$")


def _parse_node_count(text: str) -> int:
    """The largest node count a Slurm ``--nodes`` value allows (``4``, ``2-4``, ``1,4-8:2``)."""
    best = 0
    items = text.strip().split(",")
    if len(items) > 1000:
        raise BadRequest("bad-nodes", "too many node-count items")
    for item in items:
        m = _NODE_ITEM.match(item.strip())
        if not m:
            raise BadRequest("bad-nodes", f"bad node count {sanitize(text)!r}")
        low = int(m.group(1))
        high = int(m.group(2)) if m.group(2) else low
        if high < low:
            raise BadRequest("bad-nodes", f"bad node range {sanitize(item)!r}")
        best = max(best, high)
    return int(bounded(best, MAX_MULTIPLIER, "bad-nodes", "node count"))


_ARRAY_ITEM = re.compile(r"^(\d{1,9})(?:-(\d{1,9})(?::(\d{1,9}))?)?$")


def _parse_array_count(text: str) -> int:
    """How many tasks a Slurm ``--array`` spec creates (``0-3``, ``1,5,7``, ``0-15:2%4``).

    The ``%N`` concurrency limit does not reduce the total compute, so it is parsed and ignored.
    """
    spec = text.strip()
    if "%" in spec:
        spec, limit = spec.split("%", 1)
        if not _TIME_PART.match(limit.strip()):
            raise BadRequest("bad-array", f"bad array limit {sanitize(text)!r}")
    items = spec.split(",")
    if len(items) > 10_000:
        raise BadRequest("bad-array", "too many array items")
    count = 0
    for item in items:
        m = _ARRAY_ITEM.match(item.strip())
        if not m:
            raise BadRequest("bad-array", f"bad array spec {sanitize(text)!r}")
        low = int(m.group(1))
        high = int(m.group(2)) if m.group(2) is not None else low
        step = int(m.group(3)) if m.group(3) is not None else 1
        if high < low or step == 0:
            raise BadRequest("bad-array", f"bad array range {sanitize(item)!r}")
        count += (high - low) // step + 1
        if count > MAX_MULTIPLIER:
            raise BadRequest("bad-array", "array too large")
    return count


_TIME_MEMO = Memo(_parse_slurm_time, _MEMO_TEXT)
_NODES_MEMO = Memo(_parse_node_count, _MEMO_TEXT)
_ARRAY_MEMO = Memo(_parse_array_count, _MEMO_TEXT)


# ----------------------------------------------------------------------------- measurement


class Part(NamedTuple):
    """A homogeneous piece of a request: ``gpus`` of one of ``models`` for ``hours``.

    ``models`` lists every model the piece may land on (empty: the route default); the most
    capable one counts. ``assumptions`` are what the adapter had to assume (kebab-case). A
    tuple: every measured job makes two or three, and a tuple is built at a third of the cost
    of a frozen dataclass.
    """

    gpus: float
    hours: float
    models: tuple[str, ...] = ()
    assumptions: tuple[str, ...] = ()


_ECCN_RANK = {None: 0, ECCN_B: 1, ECCN_A: 2}


def _pick_model(
    names: Iterable[str], route: RouteConfig, catalog: GpuCatalog, reasons: set[str]
) -> tuple[str | None, GpuModel]:
    """(label for the audit, model whose numbers count) for a part that may run on ``names``."""
    candidates = [n for n in names if n] or ([route.gpu_model] if route.gpu_model else [])
    best: tuple[str | None, GpuModel] | None = None
    for name in candidates:
        model = catalog.resolve(name)
        if model is None:
            if route.unknown_gpu == "deny":
                raise BadRequest(
                    R_UNKNOWN_GPU_MODEL, f"GPU model {sanitize(name)!r} not in catalog"
                )
            reasons.add(R_UNKNOWN_GPU_MODEL)
            # SECURITY: an unknown model counts as the most capable part in the catalog
            choice: tuple[str | None, GpuModel] = (sanitize(name), catalog.highest)
        else:
            choice = (model.name, model)
        if best is None or choice[1].tpp > best[1].tpp:
            best = choice
    if best is None:
        if route.unknown_gpu == "deny":
            raise BadRequest(R_UNKNOWN_GPU_MODEL, "request and route name no GPU model")
        reasons.add(R_UNKNOWN_GPU_MODEL)
        best = (None, catalog.highest)
    return best


def combine(parts: Iterable[Part], route: RouteConfig, catalog: GpuCatalog) -> ComputeRequest:
    """Sum measured parts into one ``ComputeRequest`` (docs/gpus.md units).

    ``gpus`` and ``gpu_hours``/``tpp_hours`` are sums; ``hours`` is the longest part; ``tpp``,
    ``gpu_model`` and ``eccn`` are those of the most capable part (so ``tpp_hours`` equals
    ``gpu_hours * tpp`` whenever the request uses one model).
    """
    reasons: set[str] = set()
    gpus = gpu_hours = tpp_hours = tpp = 0.0
    hours = 0.0
    label: str | None = None
    eccn: str | None = None
    zero_hours = 0.0
    for part in parts:
        part_gpus, part_hours = part.gpus, part.hours
        if part_gpus > MAX_GPUS:
            bounded(part_gpus, MAX_GPUS, "gpu-count-out-of-range", "GPU count")
        if part_hours > MAX_HOURS:
            bounded(part_hours, MAX_HOURS, "time-out-of-range", "hours")
        if part_gpus <= 0:
            zero_hours = max(zero_hours, part_hours)
            continue
        if part.assumptions:
            reasons.update(part.assumptions)
        name, model = _pick_model(part.models, route, catalog, reasons)
        gpus += part_gpus
        hours = max(hours, part_hours)
        gh = part_gpus * part_hours
        gpu_hours += gh
        tpp_hours += gh * model.tpp
        if model.tpp > tpp:
            tpp, label = model.tpp, name
        if _ECCN_RANK[model.eccn] > _ECCN_RANK[eccn]:
            eccn = model.eccn
    if gpus <= 0:
        return zero(zero_hours)
    # Positional: a keyword call costs a third more, and this runs once per measured request.
    return ComputeRequest(
        label,  # gpu_model
        gpus,
        hours,
        gpu_hours,
        tpp,
        tpp_hours,
        eccn,
        eccn is not None,  # controlled
        R_UNKNOWN_GPU_MODEL not in reasons,  # model_known
        tuple(sorted(reasons)) if reasons else (),  # assumptions
    )


# ``combine`` of one part, remembered by the part's identity: an adapter that remembers its jobs'
# parts hands the same ``Part`` out again, and building the frozen ``ComputeRequest`` is most of
# what combining one part costs. An entry holds its part, route and catalog (so no other object
# can take their ids) and counts for those very objects only: ``combine`` reads nothing else,
# all three are immutable, and so is the answer handed out again.
_ONE_PART: dict[int, tuple[Part, RouteConfig, GpuCatalog, ComputeRequest]] = {}
_ONE_PART_MAX = 1024


def combine_one(part: Part, route: RouteConfig, catalog: GpuCatalog) -> ComputeRequest:
    """``combine([part], route, catalog)``, remembered for the very same three objects."""
    held = _ONE_PART.get(id(part))
    if held is not None and held[0] is part and held[1] is route and held[2] is catalog:
        return held[3]
    result = combine((part,), route, catalog)  # a refusal raises here and is not remembered
    remember(_ONE_PART, id(part), (part, route, catalog, result), 0, 0, _ONE_PART_MAX)
    return result


def zero(hours: float = 0.0) -> ComputeRequest:
    """A request that asks for no GPUs (reads, deletes, label changes)."""
    return ComputeRequest(
        gpu_model=None,
        gpus=0.0,
        hours=hours,
        gpu_hours=0.0,
        tpp=0.0,
        tpp_hours=0.0,
        eccn=None,
        controlled=False,
    )
