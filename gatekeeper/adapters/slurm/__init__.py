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
from collections.abc import Callable
from operator import itemgetter
from typing import Any

import orjson

from ...config import RouteConfig
from ...context import ComputeRequest
from ...errors import BadRequest
from ...gpus import GpuCatalog
from ...inventory import Inventory
from ...memo import Memo, remember
from ..body import load_json, sanitize
from ..common import Part, combine, combine_one, optional, zero
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
    """(role, key, path) of each field of one job that can grant something, in the order the
    version reads them. Every key is checked before any value is read (an unknown field is
    refused first); fields known to grant nothing and the script (read once per request, in
    ``measure_slurm``) are left out."""
    table = s.VERSIONS[version]
    lower = version in s.OPTION_STYLE
    out: list[tuple[str, Any, str]] = []
    for key in job:
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
        out.append((role, key, f"{where}.{key}"))
    return out


_ALLOCATE_KEYS = frozenset({"job", "hetjob"})
_SUBMIT_KEYS = frozenset({"job", "jobs", "script"})


_COMPONENTS = ("job", "jobs", "hetjob")  # v0.0.39+: at most one of them


def _components(version: str, kind: str, doc: dict[Any, Any]) -> tuple[list[Any], str]:
    """The job descriptions of a request and the path their fields are named under."""
    if kind == "update":
        return [doc], "job"
    keys = _ALLOCATE_KEYS if kind == "allocate" else _SUBMIT_KEYS
    if not keys.issuperset(doc):
        for key in doc:
            if key not in keys:
                raise unmeasurable(sanitize(str(key)), f"not a field of a {version} {kind} request")
    if version in s.OPTION_STYLE:
        name = "job" if "job" in doc else "jobs"  # the plugin looks for ``job`` first
        value = doc.get(name)
    else:
        name = ""
        for key in _COMPONENTS:
            if key in doc:
                if name:
                    raise unmeasurable(key, f"given with {name} (slurmrestd refuses both)")
                name = key
        name = name or "job"
        value = doc.get(name)
        # v0.0.39+: ``job`` is one job, ``jobs``/``hetjob`` a list of them
        if value is not None and not isinstance(value, dict if name == "job" else list):
            expected = "an object" if name == "job" else "a list"
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
    if not isinstance(text, str):
        optional(text, str, path, "a string")  # refuses all but None
        return "", ()
    if not has_directives(text):
        return "", ()
    return _blocks(text)


class _Plan:
    """The fields of one job that can grant something, as ``_job_fields`` reads them from any job
    with the same keys in the same order: ``(role, key, path)`` each, and ``values`` reading their
    values from such a job. Built once per version, path, endpoint and key list (``_plan``);
    compared by identity, so a memo key holding a plan holds all it stands for."""

    __slots__ = ("fields", "values")

    def __init__(self, fields: tuple[tuple[str, Any, str], ...]) -> None:
        self.fields = fields
        keys = [key for _, key, _ in fields]
        self.values: Callable[[dict[Any, Any]], Any] = (
            itemgetter(*keys) if keys else _no_values
        )  # one key: its value alone, more: a tuple (a plan always reads the same count)


def _no_values(job: dict[Any, Any]) -> tuple[()]:
    return ()


# Plans by (version, path, update, keys of the job in order): jobs a pipeline sends have the same
# keys again and again. A plan is built only after every key was checked (an unknown field is
# refused, never remembered), and plans for the same fields are one object (``_PLAN_OF``), so jobs
# that differ only in fields granting nothing share their job memo entries. Key lists over
# _PLAN_TEXT characters are read every time.
_PLAN_TEXT, _PLANS_MAX = 4096, 256
_PlanKey = tuple[str, str, bool, tuple[Any, ...]]
_PLANS: dict[_PlanKey, _Plan] = {}
_PLAN_OF: dict[tuple[str, str, bool, tuple[tuple[str, Any, str], ...]], _Plan] = {}


def _plan(version: str, job: dict[Any, Any], where: str, update: bool) -> _Plan:
    """The plan of ``job``'s keys (refusing an unknown or refused field, in ``_job_fields``'
    order)."""
    names = tuple(job)
    key = (version, where, update, names)
    plan = _PLANS.get(key)
    if plan is None:
        fields = tuple(_job_fields(version, job, where))
        plan = _PLAN_OF.get((version, where, update, fields))
        if plan is None:
            plan = _Plan(fields)
            size = sum(len(field_path) for _, _, field_path in fields)
            remember(_PLAN_OF, (version, where, update, fields), plan, size, _PLAN_TEXT, _PLANS_MAX)
        size = sum(len(name) if isinstance(name, str) else _PLAN_TEXT + 1 for name in names)
        remember(_PLANS, key, plan, size, _PLAN_TEXT, _PLANS_MAX)
    return plan


# Each job's bound, remembered by all it is computed from: the site (its route, catalog and
# inventory by identity; the entry holds them, so no other object can take their ids), the plan
# (the version, the job's path, the endpoint and every field the version's table says can grant
# something, in the order read), those fields' values, and the text of each block of directives
# read over the job. Fields that grant nothing (name, environment, ...) and a script's commands
# below its block are never read, so a pipeline's repeated job hits whatever else it changes.
# Every field is checked against the table before the memo is asked (``_plan``): an unknown one is
# refused, never looked up.
_JOB_KEY, _JOBS_MAX = 4096, 1024
_Site = tuple[RouteConfig, GpuCatalog, Inventory]
_JobKey = tuple[int, int, int, _Plan, bytes]
_JOBS: dict[_JobKey, tuple[_Site, Part]] = {}


def _job_key(
    route: RouteConfig,
    catalog: GpuCatalog,
    inventory: Inventory,
    plan: _Plan,
    job: dict[Any, Any],
    texts: list[str | None],
) -> _JobKey | None:
    """The memo key of a job (``None``: not to be remembered: too long, or a value orjson
    cannot write, such as an integer beyond 64 bits)."""
    try:
        text = orjson.dumps((plan.values(job), texts))
    except TypeError:
        return None
    if len(text) > _JOB_KEY:
        return None
    return id(route), id(catalog), id(inventory), plan, text


def _measure_job(
    version: str,
    job: Any,
    path: str,
    blocks: list[tuple[str | None, Ask]],
    sites: list[Site],
    route: RouteConfig,
    catalog: GpuCatalog,
    inventory: Inventory,
    update: bool,
) -> Part:
    """One job: the body alone and the body over each script's block for it (the block's text,
    ``None`` when too long to remember, and its reading). ``sites`` holds the request's site once
    a job needs it (a remembered job does not)."""
    if not isinstance(job, dict):
        raise BadRequest("bad-value", f"{path}: expected an object")
    plan = _PLANS.get((version, path, update, tuple(job))) or _plan(version, job, path, update)
    texts = [text for text, _ in blocks] if blocks else []
    key = None if None in texts else _job_key(route, catalog, inventory, plan, job, texts)
    if key is not None:
        held = _JOBS.get(key)
        if held is not None:
            (held_route, held_catalog, held_inventory), part = held
            if held_route is route and held_catalog is catalog and held_inventory is inventory:
                return part
    if not sites:
        sites.append(Site(route, catalog, inventory))
    site = sites[0]
    body = Ask()
    for role, name, field_path in plan.fields:
        apply(body, role, job[name], field_path)
    if update:
        part = bound_update(body, site, path)
    elif not blocks:
        part = bound(body, site)
    else:
        part = larger([bound(body, site), *(bound(overlay(b, body), site) for _, b in blocks)])
    if key is not None:
        remember(_JOBS, key, ((route, catalog, inventory), part), len(key[4]), _JOB_KEY, _JOBS_MAX)
    return part


def _script_blocks(
    version: str, kind: str, doc: dict[Any, Any], jobs: list[Any], name: str
) -> list[tuple[str | None, tuple[Ask, ...]]]:
    """The blocks of each script slurmrestd may run: the request's and (v0.0.39+) the first
    component's, each text once (which one wins depends on the release: module docstring)."""
    script = doc.get("script") if kind == "submit" else None
    out = [] if script is None else [_script_asks(script, "script")]  # refuses a non-string
    if version in s.OPTION_STYLE or not jobs or not isinstance(jobs[0], dict):
        return out  # the older plugins always replace the component's
    own = jobs[0].get("script")
    if own is not None and own != script:
        where = "job.script" if name == "job" else f"{name}[0].script"
        out.append(_script_asks(own, where))
    return out


def measure_slurm(req: Submission, catalog: GpuCatalog, inventory: Inventory) -> ComputeRequest:
    """Measure a Slurm REST request (see the module docstring for the rules)."""
    route, path, body = req.route, req.path, req.body
    if not body.strip():
        return zero()
    version, kind = _endpoint.cache.get(path) or _endpoint(path)
    if kind == "other":
        raise unmeasurable("path", "not a Slurm endpoint that takes a job description")
    doc = load_json(body)
    if not isinstance(doc, dict):
        raise BadRequest("bad-body", "Slurm body must be a JSON object")
    jobs, name = _components(version, kind, doc)
    update = kind == "update"
    # sbatch would give the i-th block of directives to the i-th component, and make extra
    # blocks components of their own
    scripts = [] if update else _script_blocks(version, kind, doc, jobs, name)
    sites: list[Site] = []  # the request's site, once a job not remembered needs it
    single = update or (name == "job" and len(jobs) == 1)
    parts = []
    for index, job in enumerate(jobs):
        where = name if single else f"{name}[{index}]"
        blocks = []
        for text, asks in scripts:
            if index < len(asks):
                blocks.append((text, asks[index]))
        parts.append(
            _measure_job(version, job, where, blocks, sites, route, catalog, inventory, update)
        )
    extra = 0
    for _, asks in scripts:
        extra = max(extra, len(asks))
    if extra > len(jobs):
        site = sites[0] if sites else Site(route, catalog, inventory)
        for index in range(len(jobs), extra):
            parts.append(larger([bound(b[index], site) for _, b in scripts if index < len(b)]))
    if len(parts) == 1:
        return combine_one(parts[0], route, catalog)
    return combine(parts, route, catalog)
