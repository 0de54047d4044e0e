"""Slurm's resource strings: GPU and share requests (TRES, ``--gres``, ``--gpus*``) and host lists.

TRES strings look like ``gres/gpu:8``, ``gres/gpu:h100:8``, ``gres:gpu:8``, ``gres/gpu=8``,
``gres/shard:4`` or a comma list of those; ``--gres`` values like ``gpu:h100:8`` or ``mps:100``;
``--gpus*`` values like ``8``, ``h100:8``, ``gpu:h100:8``. Requests of other resources (``cpu=``,
``mem=``, ``license/``, other generic resources) grant no accelerator and are skipped -- except a
generic resource whose name looks like an accelerator (``vgpu``, ``gpu_h100``, ``npu``), names a
model of the shipped GPU catalog (``h100``) or is not ASCII: gres.conf can bind GPU devices to any
name, so such a request is refused.

Host lists are Slurm hostlist expressions (``gpu[01-04,07],login1``): only their host count
matters here. Whatever cannot be read is refused, never taken as nothing.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from ...context import R_UNMEASURABLE
from ...errors import BadRequest
from ...gpus import GpuCatalog, load_gpu_catalog
from ...memo import Memo, remember
from ..body import sanitize
from ..common import LOOKS_ACCELERATOR, MAX_MULTIPLIER

# What a GPU spec counts: whole devices, or shares of one (a shard or an MPS unit lands on one
# physical device, so a share count bounds the devices it touches).
GPU, SHARD, MPS = "gpu", "shard", "mps"
_KINDS = (GPU, SHARD, MPS)


@dataclass(frozen=True, slots=True)
class GpuSpec:
    """``count`` units of ``kind`` (``gpu``, ``shard``, ``mps``) of an optional GPU ``model``."""

    count: float
    model: str | None = None
    kind: str = GPU


_COUNT = re.compile(r"^(\d{1,9})([kKmMgGtT]?)$")
_MULT = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_TYPE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
MAX_TEXT = 4096


@functools.cache
def _shipped_catalog() -> GpuCatalog:
    return load_gpu_catalog()


def _may_be_accelerator(name: str) -> bool:
    """Whether a generic resource other than gpu/shard/mps may be an accelerator by its name."""
    if name.startswith("license/"):
        return False
    return (
        not name.isascii()
        or LOOKS_ACCELERATOR.search(name) is not None
        or _shipped_catalog().resolve(name) is not None
    )


def _bad(text: str) -> BadRequest:
    return BadRequest("unknown-gpu-syntax", f"cannot read GPU request {sanitize(text)!r}")


def _count(text: str, original: str) -> float:
    m = _COUNT.match(text)
    if not m:
        raise _bad(original)
    return float(int(m.group(1)) * _MULT[m.group(2).lower()])


def _type_count(fields: list[str], original: str) -> tuple[str | None, float]:
    """``[]``, ``[N]``, ``[type]``, ``[type, N]`` -> (type, count); a bare name means 1."""
    if not fields:
        return None, 1.0
    if len(fields) == 1:
        if _COUNT.match(fields[0]):
            return None, _count(fields[0], original)
        if _TYPE.match(fields[0]):
            return fields[0], 1.0
    if len(fields) == 2 and _TYPE.match(fields[0]):
        return fields[0], _count(fields[1], original)
    raise _bad(original)


def parse_tres(text: str, path: str = "gres") -> list[GpuSpec]:
    """GPU and share specs in a TRES or ``--gres`` string (``gres/gpu:h100:8,cpu=4``); ``path``
    names the field in a refusal."""
    if len(text) > MAX_TEXT:
        raise BadRequest("unknown-gpu-syntax", "TRES string too long")
    specs: list[GpuSpec] = []
    for raw in text.split(","):
        item = raw.strip()
        low = item.lower()
        if not item or low == "none":
            continue
        for prefix in ("gres/", "gres:"):
            if low.startswith(prefix):
                item, low = item[len(prefix) :], low[len(prefix) :]
                break
        name = low.partition(":")[0].partition("=")[0]
        if name not in _KINDS:
            if _may_be_accelerator(name):
                # SECURITY: gres.conf may bind GPUs to this name; we have no count for it
                raise BadRequest(
                    R_UNMEASURABLE,
                    f"{sanitize(path, 200)}: generic resource {sanitize(name)!r} may be an "
                    "accelerator the gate has no count for",
                )
            continue  # cpu=, mem=, license/..., other generic resources: no accelerator
        rest = item[len(name) :]
        if rest.startswith("="):  # gpu=8 (TRES request strings)
            model, count = None, _count(rest[1:], text)
        elif "=" in rest:  # gpu:type=8
            left, right = rest.split("=", 1)
            fields = [f for f in left.split(":") if f]
            if len(fields) != 1 or not _TYPE.match(fields[0]):
                raise _bad(text)
            model, count = fields[0], _count(right, text)
        elif rest == "" or rest.startswith(":"):
            model, count = _type_count(rest[1:].split(":") if rest else [], text)
        else:
            raise _bad(text)
        specs.append(GpuSpec(count, model if name == GPU else None, name))
    return specs


def parse_gpus_option(text: str) -> list[GpuSpec]:
    """An sbatch ``--gpus*`` value: ``N``, ``type:N``, ``gpu:type:N``, or a comma list of those."""
    if len(text) > MAX_TEXT:
        raise BadRequest("unknown-gpu-syntax", "GPU request too long")
    specs: list[GpuSpec] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        fields = item.split(":")
        if fields[0].lower() == GPU:
            fields = fields[1:]
        if not fields or not _COUNT.match(fields[-1]):
            raise BadRequest("unknown-gpu-syntax", f"GPU count missing in {sanitize(text)!r}")
        model, count = _type_count(fields, text)
        specs.append(GpuSpec(count, model))
    return specs


# ----------------------------------------------------------------------------- host lists

_HOST_CHARS = re.compile(r"^[A-Za-z0-9_.\-\[\],]*$")
_RANGE = re.compile(r"^(\d{1,9})(?:-(\d{1,9}))?$")
MAX_HOSTS = MAX_MULTIPLIER


def count_hosts(text: str, what: str) -> int:
    """How many hosts a Slurm hostlist expression names (``gpu[01-04,07],login1`` -> 6).

    Duplicates count each time (an upper bound); anything that is not a plain hostlist
    (a file name, a pattern we cannot expand) is refused.
    """
    if len(text) > MAX_TEXT or not _HOST_CHARS.match(text):
        raise BadRequest(
            "unmeasurable-request", f"{what}: cannot read host list {sanitize(text)!r}"
        )
    total = 0
    for item in _split_top(text, what):
        n = 1
        for body in re.findall(r"\[([^\[\]]*)\]", item):
            n *= _bracket_count(body, text, what)
        total += n
        if total > MAX_HOSTS:
            raise BadRequest("unmeasurable-request", f"{what}: host list too long")
    return total


def _split_top(text: str, what: str) -> list[str]:
    """Comma-separated items outside brackets; empty items are skipped."""
    items: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
            if depth > 1:
                raise BadRequest("unmeasurable-request", f"{what}: nested brackets in host list")
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise BadRequest("unmeasurable-request", f"{what}: unbalanced host list")
        elif ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    if depth:
        raise BadRequest("unmeasurable-request", f"{what}: unbalanced host list")
    items.append(text[start:])
    return [item for item in items if item.strip()]


def _bracket_count(body: str, text: str, what: str) -> int:
    n = 0
    for part in body.split(","):
        m = _RANGE.match(part)
        if not m:
            raise BadRequest(
                "unmeasurable-request", f"{what}: cannot read host list {sanitize(text)!r}"
            )
        low = int(m.group(1))
        high = int(m.group(2)) if m.group(2) is not None else low
        if high < low:
            raise BadRequest("unmeasurable-request", f"{what}: bad host range {sanitize(part)!r}")
        n += high - low + 1
    return n


# ----------------------------------------------------------------------------- memoised forms

# Clients repeat the same few GPU and host-list strings; each result depends on the text alone.
MEMO_TEXT = 256
_TRES_MEMO: dict[str, tuple[GpuSpec, ...]] = {}
_GPUS_MEMO = Memo(lambda text: tuple(parse_gpus_option(text)), MEMO_TEXT)
_HOSTS_MEMO: dict[str, int] = {}


def tres_specs(text: str, path: str = "gres") -> tuple[GpuSpec, ...]:
    """``parse_tres`` as a tuple, remembered by text (``path`` names the field in a refusal
    only, and a refusal is never remembered)."""
    hit = _TRES_MEMO.get(text)
    if hit is None:
        hit = tuple(parse_tres(text, path))
        remember(_TRES_MEMO, text, hit, len(text), MEMO_TEXT)
    return hit


def gpus_option_specs(text: str) -> tuple[GpuSpec, ...]:
    """``parse_gpus_option`` as a tuple, remembered by text."""
    return _GPUS_MEMO(text)


def host_count(text: str, what: str) -> int:
    """``count_hosts`` remembered by text (``what`` names the field in a refusal only, and a
    refusal is never remembered)."""
    n = _HOSTS_MEMO.get(text)
    if n is None:
        n = count_hosts(text, what)
        remember(_HOSTS_MEMO, text, n, len(text), MEMO_TEXT)
    return n
