"""Slurm REST (``slurmrestd``) requests -> a sound upper bound of accelerators, model and hours.

The API version comes from the path (``/slurm/v0.0.41/job/submit``); each version has its own
table of job fields (``schema``) and its own key handling. Endpoints:

- ``job/submit``: ``{"script", "job", "jobs"}``. v0.0.37/38 take ``job`` (one job or a list)
  before ``jobs`` and read job keys without regard to case, in order, the last repeat winning;
  v0.0.39+ read exact keys and refuse ``job`` with ``jobs``.
- ``job/allocate`` (v0.0.40+): ``{"job", "hetjob"}``.
- ``job/{id}``: a job update, measured as the job it produces (``bound.bound_update``).

A list of jobs is a heterogeneous job: its components are summed. The batch script's ``#SBATCH``
block (``sbatch``) is read too, and for each component the larger of the readings counts -- the
body alone (what slurmrestd schedules) and the body over its block of directives (as sbatch would
merge them; blocks beyond the body's components count on their own) -- so the bound holds
whichever one the scheduler uses. The script is the request's ``script``; v0.0.39+ also take one
in the first component (``job.script``, ``jobs[0].script``). Which one runs when both are given
depends on the release: the request's replaces a single job's, and a heterogeneous job's in
most releases, but Slurm 23.11.0 and the v0.0.39 plugin (23.11, 24.05) keep the component's own
there. Both are read, and each component counts the largest reading.

An unknown version, endpoint, field or option is refused with ``unmeasurable-request`` naming its
path. ``docs/measurement.md`` tells the whole story.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from ...config import RouteConfig
from ...context import ComputeRequest
from ...errors import BadRequest
from ...gpus import GpuCatalog
from ...inventory import Inventory
from ...memo import Memo, remember
from ..body import load_json, sanitize
from ..common import Part, combine, optional, zero
from ..submission import Submission
from . import schema as s
from .bound import Site, bound, bound_update, larger
from .fields import Ask, apply, overlay, unmeasurable
from .sbatch import block_text, has_directives, read_script
from .schema import role_of_option

MAX_JOBS = 1000
_PATH = re.compile(r"/(v\d+\.\d+\.\d+)/(.*)$")
_UPDATE = re.compile(r"^job/[^/]+/?$")


def _read_path(path: str) -> tuple[str, str]:
    """(version, endpoint kind: ``submit`` / ``allocate`` / ``update`` / ``other``)."""
    m = _PATH.search(path)
    if m is None:
        raise unmeasurable("path", "no Slurm API version in the path")
    version, rest = m.group(1), m.group(2).split("?", 1)[0]
    if version not in s.VERSIONS:
        raise unmeasurable("path", f"unknown Slurm API version {sanitize(version)!r}")
    if rest.rstrip("/") == "job/submit":
        return version, "submit"
    if rest.rstrip("/") == "job/allocate" and version not in (*s.OPTION_STYLE, "v0.0.39"):
        return version, "allocate"
    if _UPDATE.match(rest):
        return version, "update"
    return version, "other"


# A path's reading depends on the path alone; clients send the same few.
_endpoint = Memo(_read_path, 256)


_SKIPPED = frozenset({s.NEUTRAL, s.SCRIPT})  # grants nothing; the script is read on its own


def _job_fields(version: str, job: dict[Any, Any], where: str) -> list[tuple[str, Any, str]]:
    """(role, value, path) of each field of one job that can grant something, in the order the
    version reads them. Every key is checked before any value is read (an unknown field is
    refused first); fields known to grant nothing and the script (read once per request, in
    ``measure_slurm``) are left out."""
    table = s.VERSIONS[version]
    lower = version in s.OPTION_STYLE
    out: list[tuple[str, Any, str]] = []
    for key, value in job.items():
        if lower:
            # Slurm lowers keys byte by byte (ASCII only): a non-ASCII key names no field, even
            # one whose Unicode lower case is ASCII (KELVIN SIGN -> "k")
            role = table.get(key.lower()) if isinstance(key, str) and key.isascii() else None
        else:
            role = table.get(key)
        if role in _SKIPPED:
            continue
        if role is None or role == s.DISABLED:
            why = "refused by slurmrestd" if role else f"not a job field of {version}"
            raise unmeasurable(f"{where}.{key}", why)
        out.append((role, value, f"{where}.{key}"))
    return out


_ALLOCATE_KEYS = frozenset({"job", "hetjob"})
_SUBMIT_KEYS = frozenset({"job", "jobs", "script"})


def _components(version: str, kind: str, doc: dict[Any, Any]) -> tuple[list[Any], str]:
    """The job descriptions of a request and the path their fields are named under."""
    if kind == "update":
        return [doc], "job"
    keys = _ALLOCATE_KEYS if kind == "allocate" else _SUBMIT_KEYS
    for key in doc:
        if key not in keys:
            raise unmeasurable(sanitize(str(key)), f"not a field of a {version} {kind} request")
    if version in s.OPTION_STYLE:
        name = "job" if "job" in doc else "jobs"  # the plugin looks for ``job`` first
    else:
        given = [k for k in ("job", "jobs", "hetjob") if k in doc]
        if len(given) > 1:
            raise unmeasurable(given[1], f"given with {given[0]} (slurmrestd refuses both)")
        name = given[0] if given else "job"
    value = doc.get(name)
    if version not in s.OPTION_STYLE and value is not None:
        # v0.0.39+: ``job`` is one job, ``jobs``/``hetjob`` a list of them
        want = dict if name == "job" else list
        if not isinstance(value, want):
            expected = "an object" if want is dict else "a list"
            raise BadRequest("bad-value", f"{name}: expected {expected}")
    if isinstance(value, list):
        if len(value) > MAX_JOBS:
            raise BadRequest("bad-body", f"more than {MAX_JOBS} job components")
        return value, name
    return ([] if value is None else [value]), name


def _read_blocks(text: str) -> tuple[Ask, ...]:
    """The ``#SBATCH`` block of a script, one ``Ask`` per component (none: no directive)."""
    asks = []
    for options in read_script(text):
        ask = Ask()
        for name, value in options:
            # an option given without a value is a flag that is set (``--exclusive``, ``-H``)
            given = True if value is None else value
            apply(ask, role_of_option(name), given, f"script:#SBATCH --{name}")
        asks.append(ask)
    return tuple(asks)


# A block's reading depends on the block's text alone (the lines before the script's first
# command: nothing after them is read); pipelines send the same block again and again, with other
# commands below it, or the very same script (found by its whole text before the block is cut
# out). Held values are copied out, never handed to a caller that could change them.
_SCRIPT_TEXT, _SCRIPTS = 4096, 512
_BLOCKS = Memo(_read_blocks, _SCRIPT_TEXT, _SCRIPTS)
_BY_SCRIPT: dict[str, tuple[str, tuple[Ask, ...]]] = {}


def _blocks(script: str) -> tuple[str | None, tuple[Ask, ...]]:
    """The script's block of directives (``None``: too long to remember) and ``_read_blocks`` of
    it, remembered by the script and by the block."""
    found = _BY_SCRIPT.get(script)
    if found is None:
        # the block is looked for in the first _SCRIPT_TEXT + 1 characters only: a command found
        # there ends the whole script's block too; none found, the block is too long to remember
        block = block_text(script[: _SCRIPT_TEXT + 1])
        if len(block) > _SCRIPT_TEXT:
            return None, _read_blocks(script)
        found = (block, _BLOCKS(block))  # the same reading: nothing after the block is read
        remember(_BY_SCRIPT, script, found, len(script), _SCRIPT_TEXT, _SCRIPTS)
    return found


def _script_asks(text: Any, path: str) -> tuple[str | None, tuple[Ask, ...]]:
    """The ``#SBATCH`` block of a script (``""``: none; ``None``: too long to remember) and its
    reading, one ``Ask`` per component (none: no directive). The readings are the memo's own:
    callers only read them (``overlay`` copies what it builds on, ``bound`` reads)."""
    script = optional(text, str, path, "a string")
    if script is None or not has_directives(script):
        return "", ()
    return _blocks(script)


# Each job's bound, remembered by all it is computed from: the site (its route, catalog and
# inventory by identity; the entry holds them, so no other object can take their ids), the
# version, the job's path, every field the version's table says can grant something -- with its
# value, in the order read -- and the text of each block of directives read over it. Fields that
# grant nothing (name, environment, ...) and a script's commands below its block are never read,
# so a pipeline's repeated job hits whatever else it changes. Every field is checked against the
# table before the memo is asked: an unknown one is refused, never looked up.
_JOB_KEY, _JOBS_MAX = 4096, 1024
_Site = tuple[RouteConfig, GpuCatalog, Inventory]
_JOBS: dict[tuple[int, int, int, bytes], tuple[_Site, Part]] = {}


def _job_key(
    site: Site, fields: list[tuple[str, Any, str]], head: tuple[Any, ...]
) -> tuple[int, int, int, bytes] | None:
    """The memo key of a job (``None``: not to be remembered: too long, or a value orjson
    cannot write, such as an integer beyond 64 bits)."""
    try:
        text = orjson.dumps((head, fields))
    except TypeError:
        return None
    if len(text) > _JOB_KEY:
        return None
    return id(site.route), id(site.catalog), id(site.inventory), text


def _measure_job(
    version: str,
    job: Any,
    path: str,
    blocks: list[tuple[str | None, Ask]],
    site: Site,
    update: bool,
) -> Part:
    """One job: the body alone and the body over each script's block for it (the block's text,
    ``None`` when too long to remember, and its reading)."""
    if not isinstance(job, dict):
        raise BadRequest("bad-value", f"{path}: expected an object")
    fields = _job_fields(version, job, path)
    texts = [text for text, _ in blocks]
    key = None if None in texts else _job_key(site, fields, (version, path, update, texts))
    if key is not None:
        held = _JOBS.get(key)
        if held is not None:
            (route, catalog, inventory), part = held
            if route is site.route and catalog is site.catalog and inventory is site.inventory:
                return part
    body = Ask()
    for role, value, field_path in fields:
        apply(body, role, value, field_path)
    if update:
        part = bound_update(body, site, path)
    elif not blocks:
        part = bound(body, site)
    else:
        part = larger([bound(body, site), *(bound(overlay(b, body), site) for _, b in blocks)])
    if key is not None:
        held_site = (site.route, site.catalog, site.inventory)
        remember(_JOBS, key, (held_site, part), len(key[3]), _JOB_KEY, _JOBS_MAX)
    return part


def _script_blocks(
    version: str, kind: str, doc: dict[Any, Any], jobs: list[Any], name: str
) -> list[tuple[str | None, tuple[Ask, ...]]]:
    """The blocks of each script slurmrestd may run: the request's and (v0.0.39+) the first
    component's, each text once (which one wins depends on the release: module docstring)."""
    first = jobs[0] if jobs and isinstance(jobs[0], dict) else {}
    found = [("script", doc.get("script") if kind == "submit" else None)]
    if version not in s.OPTION_STYLE:  # the older plugins always replace the component's
        found.append(
            (f"{name}.script" if name == "job" else f"{name}[0].script", first.get("script"))
        )
    texts: list[str] = []
    out: list[tuple[str | None, tuple[Ask, ...]]] = []
    for where, text in found:
        if text is None or text in texts:
            continue
        out.append(_script_asks(text, where))  # refuses a text that is not a string
        texts.append(text)
    return out


def measure_slurm(req: Submission, catalog: GpuCatalog, inventory: Inventory) -> ComputeRequest:
    """Measure a Slurm REST request (see the module docstring for the rules)."""
    route, path, body = req.route, req.path, req.body
    if not body.strip():
        return zero()
    version, kind = _endpoint(path)
    if kind == "other":
        raise unmeasurable("path", "not a Slurm endpoint that takes a job description")
    doc = load_json(body)
    if not isinstance(doc, dict):
        raise BadRequest("bad-body", "Slurm body must be a JSON object")
    site = Site(route, catalog, inventory)
    jobs, name = _components(version, kind, doc)
    update = kind == "update"
    # sbatch would give the i-th block of directives to the i-th component, and make extra
    # blocks components of their own
    scripts = [] if update else _script_blocks(version, kind, doc, jobs, name)
    parts = []
    for index, job in enumerate(jobs):
        single = update or (name == "job" and len(jobs) == 1)
        where = name if single else f"{name}[{index}]"
        blocks = [(t, b[index]) for t, b in scripts if index < len(b)]
        parts.append(_measure_job(version, job, where, blocks, site, update))
    extra = max((len(b) for _, b in scripts), default=0)
    for index in range(len(jobs), extra):
        parts.append(larger([bound(b[index], site) for _, b in scripts if index < len(b)]))
    return combine(parts, route, catalog)
