"""``gatekeeper inventory import``: the ``inventory:`` section read from a Slurm cluster.

slurmrestd's node and partition listings (``GET /slurm/<version>/nodes`` and ``/partitions``, or
saved answers) become one inventory entry per partition, printed as YAML for an operator to review
and paste into ``gatekeeper.yaml``. Every figure bounds from above, and what cannot be read is
refused or taken at its largest, never guessed low:

- ``nodes`` is the partition's total node count, and every one of its nodes must be in the node
  listing (22.05 hides powered-down cloud nodes unless ``PrivateData=cloud``): a partition whose
  nodes cannot all be read is an error, as its GPUs per node would be a guess;
- GPUs per node is the largest count among the partition's nodes; the model is the node's gres
  type through the catalog's aliases, the most capable one when the nodes differ; an untyped or
  uncatalogued type is an error unless the operator maps it (``--model``, ``--default-model``);
- ``exclusive`` is true when the partition's OverSubscribe is EXCLUSIVE, and also when the answer
  does not say (v0.0.37 and v0.0.38 never do) unless the operator names it ``--shared``.

Supported answer shapes: v0.0.37 and v0.0.38 (Slurm 22.05's plugins) and v0.0.40 to v0.0.42 (the
data_parser plugins: ``nodes/total``, ``maximums/time`` as ``{set, infinite, number}``,
``maximums/oversubscribe/jobs``, 0 for EXCLUSIVE). Any other version is refused.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .gpus import GpuCatalog, GpuModel

OLD_VERSIONS = ("v0.0.37", "v0.0.38")
NEW_VERSIONS = ("v0.0.40", "v0.0.41", "v0.0.42")
VERSIONS = OLD_VERSIONS + NEW_VERSIONS
MAX_ANSWER = 64 * 1024 * 1024
# The configuration loader's ranges (gatekeeper/config.py): an answer beyond them is refused here,
# with the node named, rather than as a load error after pasting.
MAX_NODES = 10_000_000
MAX_GPUS = 1024
MAX_SHARES = 1_000_000

_GRES_ITEM = re.compile(r"^([A-Za-z0-9_.-]+)(?::([^:()]+))?:(\d{1,12})([KMG]?)(?:\(.*\))?$")
_SUFFIX = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}
_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_YAML_WORDS = {"y", "n", "yes", "no", "true", "false", "on", "off", "null"}


class InventoryImportError(ValueError):
    """Bad input, an unreachable server or an answer the importer cannot bound (exit 2)."""


@dataclass
class NodeGres:
    """One node's accelerators as its ``gres`` string gives them."""

    gpus: int = 0
    types: dict[str, int] = field(default_factory=dict)  # gres type ("" untyped) -> GPUs
    shards: int = 0
    mps: int = 0


def split_gres(text: str) -> list[str]:
    """A gres list's items: commas inside parentheses (socket and index lists) do not split."""
    depth, cur, items = 0, "", []
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    return [*items, cur]


def parse_gres(text: str, node: str) -> NodeGres:
    """``gpu:h100:8(S:0-1),shard:h100:32`` -> GPUs by type, shards, MPS units."""
    out = NodeGres()
    if text in ("", "(null)", "N/A"):
        return out
    for item in split_gres(text):
        m = _GRES_ITEM.match(item.strip())
        if m is None:
            raise InventoryImportError(f"node {_q(node)}: unreadable gres {_q(item)}")
        name, gtype, digits, suffix = m.groups()
        count = int(digits) * _SUFFIX[suffix]
        if name == "gpu":
            out.gpus += count
            out.types[gtype or ""] = out.types.get(gtype or "", 0) + count
        elif name == "shard":
            out.shards += count
        elif name == "mps":
            out.mps += count
    if (out.shards or out.mps) and not out.gpus:
        raise InventoryImportError(
            f"node {_q(node)}: shards or MPS without GPUs in gres {_q(text)}"
        )
    if out.gpus > MAX_GPUS:
        raise InventoryImportError(f"node {_q(node)}: {out.gpus} GPUs, more than {MAX_GPUS}")
    return out


@dataclass
class Partition:
    """What the partition listing says of one partition."""

    name: str
    total_nodes: int
    max_minutes: int | None  # None: no limit
    exclusive: bool | None  # None: the answer does not say


def _q(value: Any) -> str:
    """A server-given value quoted for a message or a YAML comment (no line breaks survive)."""
    return json.dumps(str(value)[:200])


def _need(obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        names = " or ".join(k.__name__ for k in kinds)
        raise InventoryImportError(f"{where}: {key!r} missing or not a {names}")
    return value


def _listing(doc: Any, key: str, version: str, what: str) -> list[Any]:
    """The list under ``key`` of a slurmrestd answer, after its version and errors are checked."""
    if not isinstance(doc, dict):
        raise InventoryImportError(f"{what}: not a JSON object")
    said = version_of(doc)
    if said is not None and said != version:
        raise InventoryImportError(f"{what}: answer of {said}, not {version}")
    if _first_error(doc):
        raise InventoryImportError(
            f"{what}: slurmrestd answered with an error: {_first_error(doc)}"
        )
    items = doc.get(key)
    if not isinstance(items, list):
        raise InventoryImportError(f"{what}: {key!r} missing or not a list")
    return items


def _first_error(doc: Any) -> str:
    """The first entry of a slurmrestd answer's ``errors``, quoted ("" when there is none)."""
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(errors, list) or not errors:
        return ""
    first = errors[0] if isinstance(errors[0], dict) else {}
    return _q(first.get("description") or first.get("error") or errors[0])


def version_of(doc: Any) -> str | None:
    """The API version a saved answer names in ``meta.plugin`` (None when it names none)."""
    meta = doc.get("meta") if isinstance(doc, dict) else None
    plugin = meta.get("plugin") if isinstance(meta, dict) else None
    for key in ("data_parser", "type"):
        value = str(plugin.get(key, "") if isinstance(plugin, dict) else "").rsplit("/", 1)[-1]
        if re.fullmatch(r"v0\.0\.\d{1,3}", value):
            return value
    return None


def read_partitions(doc: Any, version: str) -> list[Partition]:
    out: list[Partition] = []
    for i, p in enumerate(_listing(doc, "partitions", version, "partitions")):
        where = f"partitions[{i}]"
        name = _need(p, "name", str, where)
        where = f"partition {_q(name)}"
        if version in OLD_VERSIONS:
            total = _need(p, "total_nodes", int, where)
            limit = _need(p, "max_time_limit", int, where)
            minutes = None if limit == -1 else limit
            exclusive = None  # 22.05's plugins do not report OverSubscribe
        else:
            total = _need(_need(p, "nodes", dict, where), "total", int, where + " nodes")
            maxima = _need(p, "maximums", dict, where)
            minutes = _time_struct(maxima.get("time"), where)
            over = maxima.get("oversubscribe")
            jobs = over.get("jobs") if isinstance(over, dict) else None
            exclusive = None if not isinstance(jobs, int) or isinstance(jobs, bool) else jobs == 0
        if minutes is not None and minutes < 0:
            raise InventoryImportError(f"{where}: maximum time {minutes} is not a duration")
        if not 0 <= total <= MAX_NODES:
            raise InventoryImportError(f"{where}: {total} nodes, not 0 to {MAX_NODES}")
        if not name or not name.isprintable():  # it is written into YAML and its comments
            raise InventoryImportError(f"{where}: not a partition name")
        if any(q.name == name for q in out):
            raise InventoryImportError(f"{where}: listed twice")
        out.append(Partition(name, total, minutes, exclusive))
    return out


def _time_struct(value: Any, where: str) -> int | None:
    """v0.0.40+ ``{set, infinite, number}`` minutes (``"Infinity"``, null or a number in
    slurmrestd's complex mode); unset or infinite is no limit."""
    if value is None or value == "Infinity":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, dict):
        raise InventoryImportError(
            f"{where}: maximums.time is not a number or {{set, infinite, number}}"
        )
    if value.get("infinite") is True or value.get("set") is False:
        return None
    return int(_need(value, "number", int, where + " maximums.time"))


def read_nodes(doc: Any, version: str) -> dict[str, tuple[NodeGres, list[str]]]:
    """Node name -> (its gres, the partitions it is in)."""
    out: dict[str, tuple[NodeGres, list[str]]] = {}
    for i, n in enumerate(_listing(doc, "nodes", version, "nodes")):
        name = _need(n, "name", str, f"nodes[{i}]")
        where = f"node {_q(name)}"
        gres = n.get("gres") if isinstance(n, dict) else None
        if gres is None:
            gres = ""
        if not isinstance(gres, str):
            raise InventoryImportError(f"{where}: 'gres' is not a string")
        parts = _need(n, "partitions", (list, str), where)
        names = parts.split(",") if isinstance(parts, str) else parts
        if not all(isinstance(p, str) for p in names):
            raise InventoryImportError(f"{where}: 'partitions' is not a list of names")
        if name in out:  # counted twice, it could stand in for a node the listing hides
            raise InventoryImportError(f"{where}: listed twice")
        out[name] = (parse_gres(gres, name), [p for p in names if p])
    return out


@dataclass
class OperatorChoices:
    """The operator's answers for what the cluster does not say."""

    models: dict[str, str] = field(default_factory=dict)  # gres type -> catalog model
    default_model: str | None = None
    shared: frozenset[str] = frozenset()


def build_entries(
    nodes: Mapping[str, tuple[NodeGres, list[str]]],
    partitions: list[Partition],
    catalog: GpuCatalog,
    choice: OperatorChoices,
    version: str,
) -> tuple[list[tuple[dict[str, Any], list[str]]], list[str]]:
    """(entry, comments) per partition with GPUs, and the comments for those left out."""
    members: dict[str, list[str]] = {}
    for node_name, (_, in_parts) in nodes.items():
        for part_name in in_parts:
            members.setdefault(part_name, []).append(node_name)
    known = {p.name for p in partitions}
    problems: list[str] = []
    skipped = [f"nodes name partition {_q(p)}, absent from the partition listing: not imported"
               for p in sorted(set(members) - known)]  # fmt: skip
    for name in sorted(choice.shared - known):
        problems.append(f"--shared {name}: no such partition")
    entries: list[tuple[dict[str, Any], list[str]]] = []
    for part in partitions:
        names = sorted(members.get(part.name, []))
        if len(names) < part.total_nodes:
            problems.append(
                f"partition {_q(part.name)} has {part.total_nodes} nodes but the node listing "
                f"shows {len(names)} (powered-down cloud nodes are hidden without "
                "PrivateData=cloud in slurm.conf)"
            )
            continue
        gres = [(n, nodes[n][0]) for n in names]
        per_node = max((g.gpus for _, g in gres), default=0)
        if per_node == 0:
            skipped.append(f"partition {_q(part.name)}: no GPU on any of its nodes; left out")
            continue
        comments: list[str] = []
        model = _model(part.name, gres, catalog, choice, comments, problems)
        shards = max((math.ceil(g.shards / g.gpus) for _, g in gres if g.gpus), default=0)
        mps = max((math.ceil(g.mps / g.gpus) for _, g in gres if g.gpus), default=0)
        if max(shards, mps) > MAX_SHARES:
            problems.append(f"partition {_q(part.name)}: more than {MAX_SHARES} shares per GPU")
        node: dict[str, Any] = {"accelerators": {"model": model.name if model else "?",
                                                 "count": per_node}}  # fmt: skip
        if shards:
            node["shards_per_gpu"] = shards
        if mps:
            node["mps_per_gpu"] = mps
        count = max(part.total_nodes, len(names))
        entry = {"name": part.name, "scheduler": "slurm", "partitions": [part.name],
                 "nodes": count, "node": node}  # fmt: skip
        if part.max_minutes is not None:
            # whole minutes; 0 (no job may start) is held to the smallest value the loader takes
            entry["max_hours"] = max(round(part.max_minutes / 60, 3), 0.001)
        exclusive = part.exclusive
        if exclusive and part.name in choice.shared:
            problems.append(f"--shared {part.name}: slurmrestd reports OverSubscribe=EXCLUSIVE")
        if exclusive is None:
            exclusive = part.name not in choice.shared
            if exclusive:
                comments.append(
                    f"exclusive: slurmrestd {version} does not report OverSubscribe; assumed "
                    "EXCLUSIVE (bounds from above). Check `scontrol show partition "
                    f"{part.name}` and re-run with --shared {part.name} if it is not"
                )
        if exclusive:
            entry["exclusive"] = True
        entries.append((entry, comments))
    if problems:
        raise InventoryImportError("; ".join(problems))
    return entries, skipped


def _model(
    part: str,
    gres: list[tuple[str, NodeGres]],
    catalog: GpuCatalog,
    choice: OperatorChoices,
    comments: list[str],
    problems: list[str],
) -> GpuModel | None:
    """The most capable model among the partition's nodes' gres types."""
    found: dict[str, GpuModel] = {}
    unknown: dict[str, list[str]] = {}
    for node, g in gres:
        for gtype in g.types:
            name = choice.models.get(gtype) or (gtype or None)
            model = catalog.resolve(name) if name is not None else None
            if model is None and choice.default_model is not None:
                model = catalog.resolve(choice.default_model)
            if model is None:
                unknown.setdefault(gtype, []).append(node)
            else:
                found[gtype] = model
    for gtype, where in unknown.items():
        what = f"type {_q(gtype)} is not in the GPU catalog" if gtype else "untyped GPUs"
        problems.append(
            f"partition {_q(part)}: {what} on {', '.join(where[:5])}"
            + (f" and {len(where) - 5} more" if len(where) > 5 else "")
            + " (map with --model TYPE=MODEL or --default-model MODEL)"
        )
    if not found:
        return None
    best = max(found.values(), key=lambda m: m.tpp)
    if len({m.name for m in found.values()}) > 1:
        seen = ", ".join(f"{_q(t or '(untyped)')} -> {m.name}" for t, m in sorted(found.items()))
        comments.append(f"model: nodes carry several types ({seen}); the most capable is taken")
    else:
        comments.append(f"model: gres type {_q(next(iter(found)) or '(untyped)')}")
    return best


def render(entries: list[tuple[dict[str, Any], list[str]]], skipped: list[str], origin: str) -> str:
    """The ``inventory:`` section as YAML, with the importer's remarks as comments."""
    lines = [
        f"# gatekeeper inventory import from {origin}: review before use",
        *(f"# {s}" for s in skipped),
        "inventory:" + ("" if entries else " []"),
    ]
    for entry, comments in entries:
        lines += [f"  # {c}" for c in comments]
        node = entry["node"]
        acc = node["accelerators"]
        lines += [
            f"  - name: {_scalar(entry['name'])}",
            "    scheduler: slurm",
            f"    partitions: [{_scalar(entry['name'])}]",
            f"    nodes: {entry['nodes']}",
            "    node:",
            f"      accelerators: {{model: {_scalar(acc['model'])}, count: {acc['count']}}}",
        ]
        lines += [f"      {k}: {node[k]}" for k in ("shards_per_gpu", "mps_per_gpu") if k in node]
        if "max_hours" in entry:
            lines.append(f"    max_hours: {entry['max_hours']:g}")
        if entry.get("exclusive"):
            lines.append("    exclusive: true")
    return "\n".join(lines) + "\n"


def _scalar(text: str) -> str:
    """A plain YAML scalar when that reads back as the same string, else a quoted one."""
    if _PLAIN.match(text) and text.casefold() not in _YAML_WORDS:
        return text
    return json.dumps(text)


def parse_json(raw: bytes, what: str) -> Any:
    if len(raw) > MAX_ANSWER:
        raise InventoryImportError(f"{what}: larger than {MAX_ANSWER // (1024 * 1024)} MiB")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InventoryImportError(f"{what}: not JSON ({str(exc)[:120]})") from None


def fetch(url: str, headers: Mapping[str, str], timeout: float = 30.0) -> Any:
    """One GET against slurmrestd; its JSON answer."""
    req = urllib.request.Request(url, headers={"Accept": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read(MAX_ANSWER + 1)
    except urllib.error.HTTPError as exc:
        said = ""
        with contextlib.suppress(ValueError, OSError, RecursionError):
            said = f": {_first_error(json.loads(exc.read(65536)))}"  # slurmrestd's reason
        raise InventoryImportError(f"{url}: HTTP {exc.code} {exc.reason}{said}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise InventoryImportError(f"{url}: unreachable ({reason})") from None
    return parse_json(raw, url)


def run(args: Any) -> int:
    """The command: read, build, print (or write ``--out``); 0, or 2 with a one-line message."""
    import sys

    from .errors import ConfigError
    from .gpus import load_gpu_catalog

    try:
        catalog = load_gpu_catalog(None)
        choice = OperatorChoices(shared=frozenset(args.shared or ()))
        for item in args.model or ():
            gtype, sep, model = item.partition("=")
            if not sep or not model:
                raise InventoryImportError(f"--model {item!r}: expected TYPE=CATALOG_MODEL")
            choice.models[gtype] = model
        choice.default_model = args.default_model
        for model in [*choice.models.values(), *filter(None, [args.default_model])]:
            if catalog.resolve(model) is None:
                raise InventoryImportError(f"model {model!r} is not in the GPU catalog")
        (nodes_doc, parts_doc), version, origin = _answers(args)
        nodes = read_nodes(nodes_doc, version)
        partitions = read_partitions(parts_doc, version)
        entries, skipped = build_entries(nodes, partitions, catalog, choice, version)
        text = render(entries, skipped, " ".join(origin.split()))
        if args.out:
            with open(args.out, "w", encoding="utf-8") as fh:
                fh.write(text)
        else:
            sys.stdout.write(text)
    except (InventoryImportError, ConfigError, OSError) as exc:
        message = " ".join(str(exc).split())
        print(f"gatekeeper inventory import: {message}", file=sys.stderr)
        return 2
    return 0


def _answers(args: Any) -> tuple[list[Any], str, str]:
    """The node and partition answers (saved, or asked of slurmrestd), their version, origin."""
    import getpass
    import os

    offline = bool(args.nodes_json or args.partitions_json)
    if offline == bool(args.slurmrestd) or (
        offline and not (args.nodes_json and args.partitions_json)
    ):
        raise InventoryImportError(
            "give --slurmrestd URL, or both --nodes-json and --partitions-json"
        )
    docs: list[Any] = []
    if offline:
        for path in (args.nodes_json, args.partitions_json):
            try:
                with open(path, "rb") as fh:
                    docs.append(parse_json(fh.read(MAX_ANSWER + 1), path))
            except OSError as exc:
                raise InventoryImportError(f"{path}: {exc.strerror}") from None
        version = args.version or version_of(docs[0]) or version_of(docs[1]) or "(not named)"
        origin = f"{os.path.basename(args.nodes_json)}, {os.path.basename(args.partitions_json)}"
    else:
        version = args.version or "v0.0.38"
        origin = f"slurmrestd {version} at {args.slurmrestd}"
    if version not in VERSIONS:
        raise InventoryImportError(f"version {version} not supported ({', '.join(VERSIONS)})")
    if offline:
        return docs, version, origin
    if not re.match(r"^https?://", args.slurmrestd):
        raise InventoryImportError(f"--slurmrestd {args.slurmrestd!r}: not an http(s) URL")
    headers = {}
    token = os.environ.get("SLURM_JWT")
    if args.token_file:
        try:
            with open(args.token_file, encoding="utf-8") as fh:
                token = fh.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise InventoryImportError(f"{args.token_file}: {exc}") from None
    if token:  # slurmrestd's auth/jwt: the user and the token in two headers
        headers["X-SLURM-USER-TOKEN"] = token
    if token or args.user:
        headers["X-SLURM-USER-NAME"] = args.user or getpass.getuser()
    base = f"{args.slurmrestd.rstrip('/')}/slurm/{version}"
    return [fetch(f"{base}/nodes", headers), fetch(f"{base}/partitions", headers)], version, origin


__all__ = ["VERSIONS", "InventoryImportError", "OperatorChoices", "build_entries", "fetch",
           "parse_gres", "parse_json", "read_nodes", "read_partitions", "render", "run",
           "split_gres", "version_of"]  # fmt: skip
