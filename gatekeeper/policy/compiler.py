"""Turn parsed policy documents into pure predicates, once per load, reporting every problem.

Validation and compilation are one pass: each rule's ``when`` becomes a three-valued ``Term``
(``terms``: generated code) over ``PolicyInput``, group members precomputed as frozensets, and all
rules one generated matcher. Every problem found
anywhere is collected as ``file:line: key.path: message``; the caller raises them together. The
attributes each rule reads are recorded with their line (``Compiled.reads``) so that ``policy
validate`` and start-up can name rules reading an attribute no configured source provides.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..context import ACTIONS, ALLOW, DENY, REQUIRE_LICENSE, QuotaDef
from ..errors import Problem
from ..yamlsrc import LocDict, LocList
from . import criteria, terms
from .criteria import OperandError
from .loader import Source
from .model import CompiledRule

MAX_DEPTH = 32
# SECURITY: YAML aliases make a DAG; a few dozen aliases can spell 10^9 condition nodes. Bound
# the conditions compiled per policy (a real pack has a few hundred).
MAX_CONDITION_NODES = 20_000
TOP_KEYS = ("version", "name", "description", "metadata", "include", "groups", "quotas", "rules")
RULE_KEYS = ("id", "description", "when", "action", "status", "quota")
QUOTA_KEYS = ("unit", "limit", "window", "per")
QUOTA_UNITS = ("tpp_hours", "gpu_hours", "requests")
QUOTA_PER = ("tenant", "entity", "ultimate_parent")
_KEBAB = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_GROUP_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_WINDOW = re.compile(r"^([1-9][0-9]{0,8})([smhdw])$")
_WINDOW_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True, slots=True)
class _Section:
    """A top-level mapping of named definitions."""

    key: str
    kind: str
    of: str  # what it maps, for the problem when it is no mapping
    name_re: re.Pattern[str]
    naming: str  # the naming rule, for the problem when a name breaks it


_GROUPS = _Section(
    "groups",
    "group",
    "group name to list",
    _GROUP_NAME,
    "group names are letters, digits and _ (starting with a letter)",
)
_QUOTAS = _Section(
    "quotas", "quota", "quota name to quota", _KEBAB, "quota names are kebab-case (a-z, 0-9, -)"
)


def parse_window(text: Any) -> int | None:
    """Seconds in a window such as ``30d``, ``1h``, ``15m``, ``1w``; ``None`` if malformed."""
    if not isinstance(text, str):
        return None
    m = _WINDOW.match(text)
    return int(m.group(1)) * _WINDOW_UNITS[m.group(2)] if m else None


@dataclass(slots=True)
class Compiled:
    """The compiled content of one policy (a list of files plus their includes)."""

    name: str
    rules: list[CompiledRule] = field(default_factory=list)
    groups: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    quotas: dict[str, QuotaDef] = field(default_factory=dict)
    docs: list[Any] = field(default_factory=list)
    # (attribute, file, line) of every attribute a condition reads
    reads: list[tuple[str, str, int]] = field(default_factory=list)
    matcher: terms.Matcher | None = None


class _Compiler:
    def __init__(self, problems: list[Problem | str]) -> None:
        self.problems = problems
        self.reads: list[tuple[str, str, int]] = []
        self.emit = terms.Emitter()
        self.nodes = 0
        self.file = ""
        self.group_where: dict[str, str] = {}
        self.quota_where: dict[str, str] = {}
        self.rule_where: dict[str, str] = {}

    def err(self, line: int | None, path: str, message: str) -> None:
        self.problems.append(Problem(self.file, line, path, message))

    # --------------------------------------------------------------------------- top level

    def compile(self, sources: Sequence[Source], name: str) -> Compiled:
        out = Compiled(name=name)
        docs: list[tuple[Source, LocDict]] = []
        for src in sources:
            self.file = src.display
            doc = src.doc
            if not isinstance(doc, LocDict):
                self.err(getattr(doc, "line", None), "", "a policy file must be a mapping")
                continue
            docs.append((src, doc))
            out.docs.append(doc)
            self._top(doc)
        # Groups and quotas first, from every file, so rules may use those of any file.
        for src, doc in docs:
            self.file = src.display
            self._groups(doc, out.groups)
            self._quotas(doc, out.quotas)
        for src, doc in docs:
            self.file = src.display
            self._rules(doc, out)
        out.reads = self.reads
        if not self.problems:
            out.matcher = self.emit.matcher([r.term.src for r in out.rules])
        return out

    def _keys(
        self, node: LocDict, path: str, known: Sequence[str], required: Sequence[str]
    ) -> bool:
        """Report the keys of ``node`` that are unknown and the required ones it lacks."""
        ok = True
        for key in node:
            if key not in known:
                where = f"{path}.{key}" if path else key
                self.err(
                    node.line_of(key), where, "unknown key" + criteria.suggest(key, list(known))
                )
                ok = False
        for key in required:
            if key not in node:
                self.err(node.line, path, f"missing required key {key!r}")
                ok = False
        return ok

    def _one_of(self, node: LocDict, key: str, path: str, allowed: Sequence[str]) -> bool:
        """Whether ``node[key]``, when given, is one of ``allowed``; reported when it is not."""
        value = node.get(key)
        if key in node and value not in allowed:
            self.err(
                node.line_of(key),
                f"{path}.{key}",
                f"invalid {key} {value!r} (expected one of: {', '.join(allowed)})",
            )
            return False
        return True

    def _first(self, where: dict[str, str], kind: str, name: str, line: int, path: str) -> bool:
        """Record where ``name`` is defined; a second definition is reported and refused."""
        if name in where:
            self.err(line, path, f"duplicate {kind} {name!r} (first defined at {where[name]})")
            return False
        where[name] = f"{self.file}:{line}"
        return True

    def _top(self, doc: LocDict) -> None:
        self._keys(doc, "", TOP_KEYS, ("version",))
        if "version" in doc and (doc["version"] != 1 or isinstance(doc["version"], bool)):
            self.err(doc.line_of("version"), "version", "version must be 1")
        for key in ("name", "description"):
            if key in doc and not isinstance(doc[key], str):
                self.err(
                    doc.line_of(key), key, f"expected a string, got {criteria.describe(doc[key])}"
                )
        if "metadata" in doc and not isinstance(doc["metadata"], LocDict):
            self.err(doc.line_of("metadata"), "metadata", "expected a mapping")

    def _named(
        self, doc: LocDict, section: _Section, seen: dict[str, str]
    ) -> Iterator[tuple[str, Any, int, str]]:
        """(name, value, line, path) of the entries of ``section`` whose names are well formed
        and not defined before (``seen``); the others are reported."""
        key = section.key
        if key not in doc:
            return
        node = doc[key]
        if not isinstance(node, LocDict):
            self.err(doc.line_of(key), key, f"expected a mapping of {section.of}")
            return
        for name, value in node.items():
            line = node.line_of(name)
            path = f"{key}.{name}"
            if not section.name_re.match(name):
                self.err(line, path, section.naming)
            elif self._first(seen, section.kind, name, line, path):
                yield name, value, line, path

    def _groups(self, doc: LocDict, groups: dict[str, tuple[Any, ...]]) -> None:
        for gname, members, line, path in self._named(doc, _GROUPS, self.group_where):
            if not isinstance(members, LocList):
                self.err(line, path, f"expected a list, got {criteria.describe(members)}")
                continue
            ok = True
            for i, m in enumerate(members):
                if isinstance(m, bool) or not isinstance(m, str | int | float) or m == "":
                    self.err(
                        members.line_of(i),
                        f"{path}[{i}]",
                        f"group members are strings or numbers, got {criteria.describe(m)}",
                    )
                    ok = False
            if ok:
                groups[gname] = tuple(members)

    def _quotas(self, doc: LocDict, quotas: dict[str, QuotaDef]) -> None:
        for qname, spec, line, path in self._named(doc, _QUOTAS, self.quota_where):
            if not isinstance(spec, LocDict):
                self.err(line, path, "expected a mapping with unit, limit, window and per")
                continue
            bad = not self._keys(spec, path, QUOTA_KEYS, ("unit", "limit", "window"))
            bad = not self._one_of(spec, "unit", path, QUOTA_UNITS) or bad
            limit = criteria.as_number(spec.get("limit"))
            if "limit" in spec and (
                isinstance(limit, bool) or not isinstance(limit, int | float) or not limit > 0
            ):
                self.err(
                    spec.line_of("limit"),
                    f"{path}.limit",
                    f"limit must be a positive number, got {criteria.describe(limit)}",
                )
                bad = True
            window = parse_window(spec.get("window"))
            if "window" in spec and window is None:
                self.err(
                    spec.line_of("window"),
                    f"{path}.window",
                    f"invalid window {spec['window']!r} (expected a positive integer and "
                    "one of s, m, h, d, w, e.g. 30d)",
                )
                bad = True
            bad = not self._one_of(spec, "per", path, QUOTA_PER) or bad
            if not bad and window is not None:
                unit, per = spec["unit"], spec.get("per", "tenant")
                quotas[qname] = QuotaDef(qname, str(unit), float(limit), window, str(per))

    # ------------------------------------------------------------------------------- rules

    def _rules(self, doc: LocDict, out: Compiled) -> None:
        if "rules" not in doc:
            return
        node = doc["rules"]
        if not isinstance(node, LocList):
            self.err(doc.line_of("rules"), "rules", "expected a list of rules")
            return
        for i, rule in enumerate(node):
            compiled = self._rule(rule, node.line_of(i), f"rules[{i}]", out)
            if compiled is not None:
                out.rules.append(compiled)

    def _rule(self, rule: Any, line: int, path: str, out: Compiled) -> CompiledRule | None:
        if not isinstance(rule, LocDict):
            self.err(line, path, f"a rule must be a mapping, got {criteria.describe(rule)}")
            return None
        ok = self._keys(rule, path, RULE_KEYS, ("id", "when", "action"))
        rid = rule.get("id")
        if "id" in rule:
            if not isinstance(rid, str) or not _KEBAB.match(rid):
                self.err(
                    rule.line_of("id"),
                    f"{path}.id",
                    f"rule ids are kebab-case (a-z, 0-9, -), got {criteria.describe(rid)}",
                )
                ok = False
            elif not self._first(self.rule_where, "rule id", rid, rule.line_of("id"), f"{path}.id"):
                ok = False
        action = rule.get("action")
        ok = self._one_of(rule, "action", path, ACTIONS) and ok
        status = rule.get("status")
        if "status" in rule:
            if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
                self.err(
                    rule.line_of("status"),
                    f"{path}.status",
                    f"status must be an integer from 400 to 599, got {criteria.describe(status)}",
                )
                ok = False
            elif action not in (DENY, REQUIRE_LICENSE):
                self.err(
                    rule.line_of("status"),
                    f"{path}.status",
                    "status is only allowed on deny and require_license rules",
                )
                ok = False
        quotas: list[QuotaDef] = []
        if "quota" in rule:
            qline = rule.line_of("quota")
            names = rule["quota"]
            names = [names] if isinstance(names, str) else names
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                self.err(qline, f"{path}.quota", "expected a quota name or a list of names")
                ok = False
            elif action != ALLOW:
                self.err(qline, f"{path}.quota", "quota is only allowed on allow rules")
                ok = False
            else:
                for n in names:
                    if n not in out.quotas:
                        if n not in self.quota_where:  # else: declared but invalid, reported there
                            self.err(
                                qline,
                                f"{path}.quota",
                                f"unknown quota {n!r}"
                                + criteria.suggest(n, list(self.quota_where)),
                            )
                        ok = False
                    else:
                        quotas.append(out.quotas[n])
        desc = rule.get("description", "")
        if not isinstance(desc, str):
            self.err(rule.line_of("description"), f"{path}.description", "expected a string")
            ok = False
        cond: terms.Term | None = None
        if "when" in rule:
            cond = self._cond(rule["when"], rule.line_of("when"), f"{path}.when", out.groups, 0)
        if not ok or cond is None:
            return None
        return CompiledRule(
            id=str(rid),
            action=str(action),
            status=status if action in (DENY, REQUIRE_LICENSE) else None,
            quotas=tuple(dict.fromkeys(quotas)),
            description=desc.strip(),
            file=self.file,
            line=rule.line,
            term=cond,
        )

    # -------------------------------------------------------------------------- conditions

    def _cond(
        self, node: Any, line: int, path: str, groups: Mapping[str, tuple[Any, ...]], depth: int
    ) -> terms.Term | None:
        if depth > MAX_DEPTH:
            self.err(line, path, f"condition nested deeper than {MAX_DEPTH} levels")
            return None
        self.nodes += 1
        if self.nodes > MAX_CONDITION_NODES:
            if self.nodes == MAX_CONDITION_NODES + 1:
                self.err(line, path, f"more than {MAX_CONDITION_NODES} condition nodes")
            return None
        if not isinstance(node, LocDict):
            self.err(line, path, f"a condition must be a mapping, got {criteria.describe(node)}")
            return None
        if not node:
            self.err(line, path, "empty condition")
            return None
        parts: list[terms.Term] = []
        ok = True
        for key, value in node.items():
            kline = node.line_of(key)
            term: terms.Term | None
            if key in ("all", "any"):
                term = self._combine(key, value, kline, f"{path}.{key}", groups, depth)
            elif key == "not":
                inner = self._cond(value, kline, f"{path}.not", groups, depth + 1)
                term = self.emit.not_of(inner) if inner is not None else None
            else:
                term = self._leaf(key, value, kline, path, groups)
            if term is None:
                ok = False
            else:
                parts.append(term)
        if not ok:
            return None
        return self.emit.all_of(parts)

    def _combine(
        self,
        key: str,
        value: Any,
        line: int,
        path: str,
        groups: Mapping[str, tuple[Any, ...]],
        depth: int,
    ) -> terms.Term | None:
        if not isinstance(value, LocList) or not value:
            self.err(line, path, f"{key} needs a non-empty list of conditions")
            return None
        parts = [
            self._cond(item, value.line_of(i), f"{path}[{i}]", groups, depth + 1)
            for i, item in enumerate(value)
        ]
        good = [p for p in parts if p is not None]
        if len(good) != len(parts):
            return None
        return self.emit.all_of(good) if key == "all" else self.emit.any_of(good)

    def _leaf(
        self, name: str, value: Any, line: int, path: str, groups: Mapping[str, tuple[Any, ...]]
    ) -> terms.Term | None:
        attr = criteria.lookup_attribute(name)
        if attr is None:
            known = [*criteria.ATTRIBUTES, *criteria.COMBINATORS]
            self.err(line, path, f"unknown attribute {name!r}" + criteria.suggest(name, known))
            return None
        apath = f"{path}.{name}"
        self.reads.append((name, self.file, line))
        if not isinstance(value, LocDict):
            try:
                pred, const = criteria.equality(attr, value)
            except OperandError as exc:
                self.err(line, apath, str(exc))
                return None
            return self.emit.leaf(attr, "eq", pred, const, f"== {terms.show(const)}")
        if not value:
            self.err(line, apath, "no operator given")
            return None
        parts: list[terms.Term] = []
        for op, operand in value.items():
            oline = value.line_of(op)
            if op not in criteria.OPERATORS:
                hint = criteria.suggest(op, list(criteria.OPERATORS)) or (
                    f" (expected one of: {', '.join(criteria.OPERATORS)})"
                )
                self.err(oline, apath, f"unknown operator {op!r}{hint}")
                continue
            try:
                pred, const = criteria.operator(attr, op, operand, groups)
            except OperandError as exc:
                self.err(oline, f"{apath}.{op}", str(exc))
                continue
            except KeyError:
                self.err(
                    oline,
                    f"{apath}.{op}",
                    f"unknown group {operand!r}"
                    + criteria.suggest(str(operand), list(self.group_where)),
                )
                continue
            parts.append(self.emit.leaf(attr, op, pred, const, f"{op} {terms.show(operand)}"))
        if len(parts) != len(value):
            return None
        return self.emit.all_of(parts)


def compile_sources(
    sources: Sequence[Source], problems: list[Problem | str], *, name: str | None = None
) -> Compiled:
    """Compile ``sources`` (already in include order) into rules, groups and quotas."""
    if name is None:
        name = _policy_name(sources)
    return _Compiler(problems).compile(sources, name)


def _policy_name(sources: Sequence[Source]) -> str:
    if not sources:
        return "empty"
    last = sources[-1]  # the last source is the last top-level file (includes come first)
    doc = last.doc
    if isinstance(doc, dict) and isinstance(doc.get("name"), str):
        return str(doc["name"])
    return os.path.splitext(os.path.basename(last.display))[0]
