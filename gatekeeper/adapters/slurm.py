"""Slurm REST (``slurmrestd``) submissions -> requested GPUs, model and hours (DOMAIN §5).

Bodies: ``{"job": {...}}``, ``{"jobs": [...]}`` (a heterogeneous job: the components are summed),
``{"script": "...", "job": {...}}`` (script at the top, older API versions), or a bare job
description (the ``POST .../job/{id}`` update endpoint).

GPU sources, each turned into a total for the job; the largest total counts, because Slurm must
satisfy all of them at once:

- ``tres_per_job`` / ``--gpus`` / ``-G``                          x 1
- ``tres_per_node`` / ``--gpus-per-node`` / ``--gres`` / ``gres``  x nodes
- ``tres_per_task`` / ``--gpus-per-task``                         x tasks
- ``tres_per_socket`` / ``--gpus-per-socket``                     x sockets per node x nodes

TRES strings look like ``gres/gpu:8``, ``gres/gpu:h100:8``, ``gres:gpu:8``, ``gres/gpu=8`` or a
comma list of those; sbatch values look like ``8``, ``h100:8``, ``gpu:h100:8``.

**Body fields win over ``#SBATCH`` lines** for the same option (as the sbatch command line wins over
the script): a body ``time_limit`` overrides ``--time``, a body ``tres_per_node`` overrides
``--gpus-per-node``/``--gres``, ``nodes`` overrides ``-N``, ``array`` overrides ``--array``.
``#SBATCH`` lines are read anywhere in the script, and a repeated option counts with its largest
value, so whether the scheduler reads the first, the last or only the header lines, we never count
less than it does. A script with more than ``MAX_DIRECTIVES`` ``#SBATCH`` lines is refused
(``bad-script``): real scripts carry dozens, and reading a megabyte of them cost 170 ms of CPU per
request, which one authenticated client could repeat to tie up the gate.

Nodes: the maximum of a range (``2-4`` -> 4). Arrays multiply the job by their task count (the
``%N`` concurrency limit does not reduce total compute); ``gpus`` is then the GPUs of all array
tasks together. Time: ``time_limit`` in minutes, a number or ``{set, infinite, number}``; a missing,
unset, infinite or zero limit means the route's ``max_hours``. A requested limit longer than
``max_hours`` is taken as requested: capping it would under-count what the client asked for.
The model comes from a typed GPU request, else from ``partition`` when it names a catalogued model
(a comma list: the most capable), else the route's ``gpu_model``. Unknown ``tres_per_socket``
socket counts assume ``ASSUMED_SOCKETS`` per node (reason ``slurm-sockets-assumed``).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from ..config import RouteConfig
from ..context import ComputeRequest
from ..errors import BadRequest
from ..gpus import GpuCatalog
from ..inventory import EMPTY_INVENTORY, Inventory
from ..memo import Memo, remember
from .common import (
    MAX_MULTIPLIER,
    Part,
    _parse_array_count,
    _parse_node_count,
    _parse_slurm_time,
    as_list,
    as_mapping,
    bounded,
    combine,
    load_json,
    number,
    parse_array_count,
    parse_node_count,
    parse_slurm_time,
    sanitize,
)

ASSUMED_SOCKETS = 2
MAX_SCRIPT_LINES = 100_000
MAX_DIRECTIVES = 500  # #SBATCH lines per script (module docstring)
MAX_JOBS = 1000

# Which per-unit bucket a GPU source belongs to.
JOB, NODE, TASK, SOCKET = "job", "node", "task", "socket"


@dataclass(slots=True)
class GpuSpec:
    """GPUs per ``unit`` of an optional ``model``."""

    unit: str
    count: float
    model: str | None = None


@dataclass(slots=True)
class JobShape:
    """What one job (or hetjob component) asks for; ``None`` fields are "not given"."""

    gpus: dict[str, list[GpuSpec]] = field(default_factory=dict)
    nodes: int | None = None
    tasks: int | None = None
    tasks_per_node: int | None = None
    sockets_per_node: int | None = None
    minutes: float | None = None
    time_given: bool = False
    array: int | None = None
    partition: str | None = None


# ----------------------------------------------------------------------------- GPU strings

_COUNT = re.compile(r"^(\d{1,9})([kKmMgG]?)$")
_MULT = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_TYPE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def _count(text: str, original: str) -> float:
    m = _COUNT.match(text)
    if not m:
        raise BadRequest("unknown-gpu-syntax", f"bad GPU count in {sanitize(original)!r}")
    return float(int(m.group(1)) * _MULT[m.group(2).lower()])


def _parse_type_count(fields: list[str], original: str) -> tuple[str | None, float]:
    """``[]``, ``[N]``, ``[type]``, ``[type, N]`` -> (type, count); a bare ``gpu`` means 1."""
    if not fields:
        return None, 1.0
    if len(fields) == 1:
        if _COUNT.match(fields[0]):
            return None, _count(fields[0], original)
        if _TYPE.match(fields[0]):
            return fields[0], 1.0
    if len(fields) == 2 and _TYPE.match(fields[0]):
        return fields[0], _count(fields[1], original)
    raise BadRequest("unknown-gpu-syntax", f"cannot read GPU request {sanitize(original)!r}")


# Parsed TRES and --gpus strings, (count, model) pairs by text: clients resubmit the same few
# shapes, and parsing is a visible share of a submission's cost (bounded: ``gatekeeper.memo``).
_Pairs = tuple[tuple[float, str | None], ...]  # (count, model) of each GPU spec
_MEMO_TEXT = 256


def _specs(unit: str, pairs: _Pairs) -> list[GpuSpec]:
    """Fresh GpuSpec objects every time: callers may change them."""
    if len(pairs) == 1:
        count, model = pairs[0]
        return [GpuSpec(unit, count, model)]
    return [GpuSpec(unit, count, model) for count, model in pairs]


def parse_tres(text: str, unit: str) -> list[GpuSpec]:
    """GPU specs in a TRES/gres string (``gres/gpu:h100:8,cpu=4``); other TRES are ignored."""
    return _specs(unit, _tres_pairs(text))


def _parse_tres(text: str) -> _Pairs:
    specs: list[tuple[float, str | None]] = []
    if len(text) > 4096:
        raise BadRequest("unknown-gpu-syntax", "TRES string too long")
    for raw in text.split(","):
        item = raw.strip()
        if not item or item.lower() == "none":
            continue
        low = item.lower()
        for prefix in ("gres/", "gres:"):
            if low.startswith(prefix):
                item, low = item[len(prefix) :], low[len(prefix) :]
                break
        name = re.split(r"[:=]", low, maxsplit=1)[0]
        if name != "gpu":
            continue  # cpu=, mem=, license/, gres/shard, gres/mps: not GPUs we can count
        rest = item[3:]
        if rest.startswith("="):  # gpu=8 or gpu:type=8 (TRES request strings)
            model, count = None, _count(rest[1:], text)
        elif "=" in rest:
            left, right = rest.split("=", 1)
            fields = [f for f in left.split(":") if f]
            if len(fields) != 1 or not _TYPE.match(fields[0]):
                raise BadRequest("unknown-gpu-syntax", f"cannot read {sanitize(text)!r}")
            model, count = fields[0], _count(right, text)
        elif rest == "" or rest.startswith(":"):
            fields = rest[1:].split(":") if rest else []
            model, count = _parse_type_count(fields, text)
        else:
            raise BadRequest("unknown-gpu-syntax", f"cannot read {sanitize(text)!r}")
        specs.append((count, model))
    return tuple(specs)


_tres_pairs = Memo(_parse_tres, _MEMO_TEXT)


def parse_gpus_option(text: str, unit: str) -> list[GpuSpec]:
    """An sbatch ``--gpus*`` value: ``N``, ``type:N``, or a comma list of those."""
    return _specs(unit, _gpus_pairs(text))


def _parse_gpus_option(text: str) -> _Pairs:
    specs: list[tuple[float, str | None]] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        fields = item.split(":")
        if fields[0].lower() == "gpu":
            fields = fields[1:]
        if not fields or not _COUNT.match(fields[-1]):
            raise BadRequest("unknown-gpu-syntax", f"GPU count missing in {sanitize(text)!r}")
        model, count = _parse_type_count(fields, text)
        specs.append((count, model))
    return tuple(specs)


_gpus_pairs = Memo(_parse_gpus_option, _MEMO_TEXT)


# ----------------------------------------------------------------------------- body fields


def _int_field(value: Any, what: str) -> int | None:
    """A Slurm integer that may be a number, a numeric string or ``{set, infinite, number}``."""
    if value is None:
        return None
    if isinstance(value, dict):
        if value.get("set") is False or value.get("infinite") is True:
            return None
        value = value.get("number")
        if value is None:
            return None
    n = number(value, what)
    return int(bounded(n, MAX_MULTIPLIER, "bad-value", what))


def _time_field(value: Any) -> tuple[bool, float | None]:
    """(given, minutes or None for no limit) from a body ``time_limit``."""
    if value is None:
        return False, None
    if isinstance(value, dict):
        if value.get("set") is False:
            return False, None
        if value.get("infinite") is True:
            return True, None
        if "number" not in value:
            return False, None
        value = value["number"]
    if isinstance(value, str):
        return True, parse_slurm_time(value)
    minutes = number(value, "time_limit", allow_str=False)
    return True, (None if minutes == 0 else minutes)


_BODY_TRES = (("tres_per_job", JOB), ("tres_per_node", NODE), ("tres_per_task", TASK))
_LEGACY_GPUS = (
    ("gpus", JOB),
    ("gpus_per_node", NODE),
    ("gpus_per_task", TASK),
    ("gpus_per_socket", SOCKET),
)


# The body's GPU fields in the order they are read (and refused): (field, unit, kind).
_TRES, _GRES, _LEGACY = "tres", "gres", "legacy"
_GPU_FIELD_ORDER: tuple[tuple[str, str, str], ...] = (
    *((key, unit, _TRES) for key, unit in (*_BODY_TRES, ("tres_per_socket", SOCKET))),
    ("gres", NODE, _GRES),
    *((key, unit, _LEGACY) for key, unit in _LEGACY_GPUS),
)
_GPU_FIELDS = frozenset(key for key, _, _ in _GPU_FIELD_ORDER)


def _shape_from_body(job: dict[Any, Any]) -> JobShape:
    # Fields are read (and refused) in a fixed order, whatever the body's key order; absent
    # fields are skipped without a call, as most jobs carry only a few of them.
    shape = JobShape()
    if not _GPU_FIELDS.isdisjoint(job):
        _body_gpus(job, shape.gpus)
    get = job.get
    nodes = get("nodes")
    if isinstance(nodes, str):
        shape.nodes = parse_node_count(nodes)
    elif nodes is not None:
        shape.nodes = _int_field(nodes, "nodes")
    for key in ("minimum_nodes", "maximum_nodes"):
        value = get(key)
        if value is not None:
            n = _int_field(value, key)
            if n is not None:
                shape.nodes = max(shape.nodes or 0, n)
    tasks = job["tasks"] if "tasks" in job else get("ntasks")
    if tasks is not None:
        shape.tasks = _int_field(tasks, "tasks")
    value = get("tasks_per_node")
    if value is not None:
        shape.tasks_per_node = _int_field(value, "tasks_per_node")
    value = get("sockets_per_node")
    if value is not None:
        shape.sockets_per_node = _int_field(value, "sockets_per_node")
    value = get("time_limit")
    if value is not None:
        shape.time_given, shape.minutes = _time_field(value)
    array = get("array")
    if array is not None and array != "":
        if not isinstance(array, str):
            raise BadRequest("bad-array", "array: expected a string")
        shape.array = parse_array_count(array)
    partition = get("partition")
    if partition is not None and not isinstance(partition, str):
        raise BadRequest("bad-value", "partition: expected a string")
    shape.partition = partition or None
    return shape


def _body_gpus(job: dict[Any, Any], gpus: dict[str, list[GpuSpec]]) -> None:
    """The body's GPU fields into ``gpus`` (by unit, in ``_GPU_FIELD_ORDER``)."""
    get = job.get
    for key, unit, kind in _GPU_FIELD_ORDER:
        value = get(key)
        if value is None:
            continue
        if kind is _TRES:
            if value == "":
                continue
            if not isinstance(value, str):
                raise BadRequest("unknown-gpu-syntax", f"{key}: expected a string")
            gpus.setdefault(unit, []).extend(parse_tres(value, unit))
        elif kind is _GRES:
            if value:
                if not isinstance(value, str):
                    raise BadRequest("unknown-gpu-syntax", "gres: expected a string")
                gpus.setdefault(NODE, []).extend(parse_tres(value, NODE))
        elif value == "" or (isinstance(value, dict) and not value.get("set", 1)):
            continue
        elif isinstance(value, str):
            gpus.setdefault(unit, []).extend(parse_gpus_option(value, unit))
        else:
            n = _int_field(value, key)
            if n:
                gpus.setdefault(unit, []).append(GpuSpec(unit, float(n)))


# ----------------------------------------------------------------------------- #SBATCH


_SHORT = {"-G": "--gpus", "-N": "--nodes", "-t": "--time", "-a": "--array", "-n": "--ntasks"}
_OPTIONS = {
    "--gpus",
    "--gpus-per-node",
    "--gpus-per-task",
    "--gpus-per-socket",
    "--gres",
    "--nodes",
    "--time",
    "--array",
    "--ntasks",
    "--ntasks-per-node",
    "--sockets-per-node",
    "--partition",
}
_GPU_OPTIONS = {
    "--gpus": JOB,
    "--gpus-per-node": NODE,
    "--gpus-per-task": TASK,
    "--gpus-per-socket": SOCKET,
}


# What one ``#SBATCH`` option sets: (JobShape field, GPU unit or "", parsed value). GPU options
# carry (count, model) pairs, turned into fresh GpuSpec objects for each request.
_Effect = tuple[str, str, Any]
_GPUS, _TIME, _PARTITION, _IGNORED = "gpus", "time", "partition", ""
_INT_OPTIONS = {
    "--ntasks": "tasks",
    "--ntasks-per-node": "tasks_per_node",
    "--sockets-per-node": "sockets_per_node",
}

# Parsed options by ``#SBATCH`` line text: scripts repeat the same few header lines. Bounded like
# the TRES cache; only short lines, and only lines whose every option parsed, are kept. Only the
# first ``_CACHED_LINES`` directive lines of a script go through the caches: a script of many
# distinct lines gains nothing from them, would pay their bookkeeping on every line and would
# flush what other clients' requests put there.
_CACHED_LINES = 64


def _parse_directive(line: str) -> tuple[_Effect, ...]:
    """What the options of one ``#SBATCH`` line (the text after ``#SBATCH``) set, in order.

    Every option is parsed before any is applied; as applying cannot fail, the first bad option
    still decides the error, as when they were parsed and applied one by one.
    """
    return tuple([_option_effect(opt, value) for opt, value in _read_directive(line)])


def _option_effect(opt: str, value: str) -> _Effect:
    if opt == "--gres":
        return _GPUS, NODE, _tres_pairs(value)
    if opt in _GPU_OPTIONS:
        return _GPUS, _GPU_OPTIONS[opt], _gpus_pairs(value)
    if opt == "--nodes":
        return "nodes", "", parse_node_count(value)
    if opt in _INT_OPTIONS:
        return _INT_OPTIONS[opt], "", _int_opt(value, opt)
    if opt == "--time":
        return _TIME, "", parse_slurm_time(value)
    if opt == "--array":
        return "array", "", parse_array_count(value)
    if opt == "--partition":
        return _PARTITION, "", value
    return _IGNORED, "", None  # not produced by _read_directive; ignored as before


def _apply_uncached(
    line: str,
    shape: JobShape,
    candidates: dict[str, list[list[GpuSpec]]],
    times: list[float | None],
) -> None:
    """Read and apply one ``#SBATCH`` line option by option, without the caches."""
    for opt, value in _read_directive(line):
        if opt == "--gres":
            candidates.setdefault(NODE, []).append(_specs(NODE, _parse_tres(value)))
        elif opt in _GPU_OPTIONS:
            unit = _GPU_OPTIONS[opt]
            candidates.setdefault(unit, []).append(_specs(unit, _parse_gpus_option(value)))
        elif opt == "--nodes":
            shape.nodes = _max_or(shape.nodes, _parse_node_count(value))
        elif opt in _INT_OPTIONS:
            name = _INT_OPTIONS[opt]
            setattr(shape, name, _max_or(getattr(shape, name), _int_opt(value, opt)))
        elif opt == "--time":
            times.append(_parse_slurm_time(value))
        elif opt == "--array":
            shape.array = _max_or(shape.array, _parse_array_count(value))
        elif opt == "--partition":
            shape.partition = value


def _max_or(current: int | None, new: int) -> int:
    return new if current is None else max(current, new)


def _read_directive(line: str) -> list[tuple[str, str]]:
    if "'" in line or '"' in line or "\\" in line:
        try:
            tokens = shlex.split(line, posix=True)
        except ValueError:
            tokens = line.split()
    else:
        tokens = line.split()  # the common case; shlex is ~20x slower
    pairs: list[tuple[str, str]] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        i += 1
        if tok.startswith("--"):
            opt, eq, value = tok.partition("=")
            if opt == "--partition" or opt in _OPTIONS:
                if not eq:
                    if i >= len(tokens):
                        break
                    value = tokens[i]
                    i += 1
                pairs.append((opt, value))
        elif tok.startswith("-") and len(tok) >= 2 and tok[:2] in (*_SHORT, "-p"):
            opt = "--partition" if tok[:2] == "-p" else _SHORT[tok[:2]]
            value = tok[2:]
            if value.startswith("="):
                value = value[1:]
            if not value:
                if i >= len(tokens):
                    break
                value = tokens[i]
                i += 1
            pairs.append((opt, value))
    return pairs


_directive_effects = Memo(_parse_directive, _MEMO_TEXT)


def _shape_from_script(script: str) -> JobShape | None:
    """The ``#SBATCH`` options of a script; ``None`` when it has none (nothing to merge)."""
    if "#SBATCH" not in script:
        # No line can be a directive (most scripts sent with a body job); the length still counts
        # (every line takes at least one character, so short scripts need no split).
        if len(script) > MAX_SCRIPT_LINES and len(script.splitlines()) > MAX_SCRIPT_LINES:
            raise BadRequest("bad-script", "script too long")
        return None
    shape = JobShape()
    candidates: dict[str, list[list[GpuSpec]]] = {}
    times: list[float | None] = []
    lines = script.splitlines()
    read = 0
    for raw in lines if len(lines) <= MAX_SCRIPT_LINES else lines[:MAX_SCRIPT_LINES]:
        if "#SBATCH" not in raw:
            continue
        line = raw.lstrip()
        if not line.startswith("#SBATCH"):
            continue
        read += 1
        if read > MAX_DIRECTIVES:
            raise BadRequest("bad-script", f"more than {MAX_DIRECTIVES} #SBATCH lines")
        text = line[len("#SBATCH") :]
        if read > _CACHED_LINES or len(text) > _MEMO_TEXT:
            _apply_uncached(text, shape, candidates, times)
            continue
        for field_name, unit, value in _directive_effects(text):
            if field_name is _GPUS:
                candidates.setdefault(unit, []).append(_specs(unit, value))
            elif field_name is _TIME:
                times.append(value)
            elif field_name is _PARTITION:
                shape.partition = value
            elif field_name:  # a count: a repeated option counts with its largest value
                current = getattr(shape, field_name)
                setattr(shape, field_name, value if current is None else max(current, value))
    # Checked after the first lines' directives, as the line-by-line reading always did.
    if len(lines) > MAX_SCRIPT_LINES:
        raise BadRequest("bad-script", "script too long")
    for unit, options in candidates.items():
        # A repeated option counts with its largest value (see module docstring).
        if len(options) == 1:
            shape.gpus[unit] = options[0]
        else:
            shape.gpus[unit] = max(options, key=lambda specs: sum(s.count for s in specs))
    if times:
        shape.time_given = True
        # No limit anywhere means no limit (route max_hours); otherwise the longest limit.
        if len(times) == 1:
            shape.minutes = times[0]
        else:
            shape.minutes = None if None in times else max(t for t in times if t is not None)
    return shape


def _int_opt(value: str, opt: str) -> int:
    return int(bounded(number(value, opt), MAX_MULTIPLIER, "bad-value", opt))


# ----------------------------------------------------------------------------- merge + measure


def _merge(body: JobShape, script: JobShape | None) -> JobShape:
    """Body fields win over the script's for the same option."""
    if script is None:
        return body
    merged = JobShape()
    merged.gpus = dict(script.gpus)
    merged.gpus.update(body.gpus)
    merged.nodes = body.nodes if body.nodes is not None else script.nodes
    merged.tasks = body.tasks if body.tasks is not None else script.tasks
    merged.tasks_per_node = (
        body.tasks_per_node if body.tasks_per_node is not None else script.tasks_per_node
    )
    merged.sockets_per_node = (
        body.sockets_per_node if body.sockets_per_node is not None else script.sockets_per_node
    )
    if body.time_given:
        merged.time_given, merged.minutes = True, body.minutes
    else:
        merged.time_given, merged.minutes = script.time_given, script.minutes
    merged.array = body.array if body.array is not None else script.array
    merged.partition = body.partition or script.partition
    return merged


def _part(shape: JobShape, route: RouteConfig, catalog: GpuCatalog) -> Part:
    nodes = max(shape.nodes or 1, 1)
    tasks = max(shape.tasks or 0, (shape.tasks_per_node or 0) * nodes, 1)
    reasons: tuple[str, ...] = ()
    sockets = shape.sockets_per_node
    if sockets is None and shape.gpus.get(SOCKET):
        sockets = ASSUMED_SOCKETS
        reasons = ("slurm-sockets-assumed",)
    total = 0.0
    models: list[str] = []
    for unit, specs in shape.gpus.items():
        if unit == NODE:
            multiplier = nodes
        elif unit == JOB:
            multiplier = 1
        elif unit == TASK:
            multiplier = tasks
        else:
            multiplier = (sockets or 1) * nodes
        count = sum([s.count for s in specs]) * multiplier
        if count > total:
            total = count
        for s in specs:
            if s.model:
                models.append(s.model)
    if not models and shape.partition:
        named = [p for p in shape.partition.split(",") if catalog.resolve(p.strip()) is not None]
        models.extend(p.strip() for p in named)
    array = shape.array or 1
    minutes = shape.minutes if shape.time_given else None
    hours = route.max_hours if minutes is None else minutes / 60.0
    unique = tuple(models) if len(models) < 2 else tuple(dict.fromkeys(models))
    return Part(total * array, hours, unique, reasons)


# ----------------------------------------------------------------------------- measured jobs

# What a one-job submission measures to, by the job fields that decide it (``_job_key``) and, when
# its script has ``#SBATCH`` lines, by the shape they parse to (``_shape_key``): clients resubmit
# the same few shapes (partition, GPUs, nodes, time) under new names, scripts and environments,
# and reading the fields again costs more than the JSON parse. Bounded like the other caches
# (``gatekeeper.memo``); a refused job raises before anything is kept.
_DECIDING_FIELDS = frozenset(
    {
        *(key for key, _, _ in _GPU_FIELD_ORDER),
        "nodes",
        "minimum_nodes",
        "maximum_nodes",
        "tasks",
        "ntasks",
        "tasks_per_node",
        "sockets_per_node",
        "time_limit",
        "array",
        "partition",
    }
)
_KEY_TEXT = 512  # characters of field text a cached key may hold
_KEY_GPU_SPECS = 8  # GPU specs a script's shape may hold and still be cached
_SCRIPT: Any = object()  # in a cache key: what follows is the script's shape (never a field name)
_SCALARS = frozenset({str, int, float, bool, type(None)})
_measured: dict[tuple[Any, ...], ComputeRequest] = {}


def _job_key(job: dict[Any, Any]) -> tuple[Any, ...] | None:
    """Every field ``_shape_from_body`` reads, as (name, type, value) in the body's order (``1``,
    ``1.0``, ``True`` and ``"1"`` differ there); ``None`` when a value is not a scalar or a flat
    mapping of scalars, or the text is too long to keep.

    One pass over the job's own fields instead of a lookup per deciding field: a field that is
    absent is simply not in the key, and the same fields in another order only make another key.
    """
    key: list[Any] = []
    text = 0
    for name, value in job.items():
        if name not in _DECIDING_FIELDS:
            continue
        kind = type(value)
        if kind is str:
            text += len(value)
        elif kind is dict:
            items = []
            for k, v in value.items():
                if type(v) not in _SCALARS or type(k) is not str:
                    return None
                items.append((k, type(v), v))
            value = tuple(items)
        elif kind not in _SCALARS:
            return None
        key.append(name)
        key.append(kind)
        key.append(value)
    return tuple(key) if text <= _KEY_TEXT else None


def _measure_job(
    job: dict[Any, Any], script: JobShape | None, route: RouteConfig, catalog: GpuCatalog
) -> ComputeRequest:
    """A one-job submission, from ``_measured`` when its deciding fields (and its script's
    ``#SBATCH`` options) were measured before."""
    key = _job_key(job)
    if key is not None and script is not None:
        script_key = _shape_key(script)
        key = None if script_key is None else (*key, _SCRIPT, *script_key)
    if key is None:
        return _measure_afresh(job, script, route, catalog)
    # The route's fields that measuring reads, and the catalog itself (held by the key, so a
    # reloaded catalog is a different key, never a reused id).
    full = (route.max_hours, route.gpu_model, route.unknown_gpu, catalog, *key)
    hit = _measured.get(full)
    if hit is None:
        hit = _measure_afresh(job, script, route, catalog)
        remember(_measured, full, hit, 0, 0)
    return hit


def _measure_afresh(
    job: dict[Any, Any], script: JobShape | None, route: RouteConfig, catalog: GpuCatalog
) -> ComputeRequest:
    return combine([_part(_merge(_shape_from_body(job), script), route, catalog)], route, catalog)


def _shape_key(shape: JobShape) -> tuple[Any, ...] | None:
    """A script's shape as a flat tuple of (type, value) pairs: hashable, and exact about types
    (the parser's ``2`` and ``2.0`` must not share a measurement); ``None`` when it is too big to
    keep (many GPU options, a long partition list)."""
    n_specs = sum(map(len, shape.gpus.values()))
    if len(shape.partition or "") > _KEY_TEXT or n_specs > _KEY_GPU_SPECS:
        return None
    key: list[Any] = []
    for unit, specs in shape.gpus.items():
        key.append(unit)
        key.append(len(specs))
        for spec in specs:
            key += (spec.unit, type(spec.count), spec.count, spec.model)
    for value in (
        shape.nodes,
        shape.tasks,
        shape.tasks_per_node,
        shape.sockets_per_node,
        shape.minutes,
        shape.time_given,
        shape.array,
        shape.partition,
    ):
        key.append(type(value))
        key.append(value)
    return tuple(key)


def measure_slurm(
    route: RouteConfig,
    method: str,
    path: str,
    headers: Any,
    body: bytes,
    catalog: GpuCatalog,
    inventory: Inventory = EMPTY_INVENTORY,
) -> ComputeRequest:
    """Measure a Slurm REST submission (see the module docstring for the rules)."""
    doc = load_json(body) if body.strip() else {}
    if not isinstance(doc, dict):
        raise BadRequest("bad-body", "Slurm body must be a JSON object")
    script = doc.get("script")
    if script is not None and not isinstance(script, str):
        raise BadRequest("bad-value", "script: expected a string")
    top_script = _shape_from_script(script) if script else None
    jobs: list[dict[Any, Any]]
    if "jobs" in doc:
        jobs = [as_mapping(j, "jobs[]") for j in as_list(doc["jobs"], "jobs")]
        if len(jobs) > MAX_JOBS:
            raise BadRequest("bad-body", f"more than {MAX_JOBS} job components")
    elif "job" in doc:
        jobs = [as_mapping(doc["job"], "job")]
    else:
        jobs = [doc]  # bare job description (job update endpoint) or script-only body
    parts: list[Part] = []
    for index, job in enumerate(jobs):
        own = job.get("script") if job is not doc else None
        if own is not None and not isinstance(own, str):
            raise BadRequest("bad-value", "job.script: expected a string")
        script_shape = _shape_from_script(own) if own else (top_script if index == 0 else None)
        if len(jobs) == 1:
            return _measure_job(job, script_shape, route, catalog)
        shape = _merge(_shape_from_body(job), script_shape)
        parts.append(_part(shape, route, catalog))
    return combine(parts, route, catalog)
