"""Compiled conditions: three-valued (Kleene) predicates over ``PolicyInput``, as generated code.

A condition evaluates to ``True``, ``False`` or ``None`` (unknown). A comparison with an unknown
attribute value is unknown; ``exists`` and ``missing`` are always true or false. Combinators
follow Kleene's logic: ``not`` of unknown is unknown; ``all`` is false if any part is false, else
unknown if any part is unknown; ``any`` is true if any part is true, else unknown if any part is
unknown. Parts are evaluated left to right and stop at the first deciding one.

The one evaluator is code generated here. Each ``Term`` is a Python expression over the five facts
(``p o g c r``) with these semantics; ``Emitter.matcher`` compiles every rule's expression into
one function returning the bitmasks of true and unknown rules (the hot path), and ``Term.test``
compiles a single term's expression on first use (traces, ``unknown:`` reasons). Both run the same
generated code, so a trace can never disagree with a decision.

SECURITY: no policy text is ever placed in generated source. Attribute and field names come from
the fixed table in ``criteria``, operators from the fixed templates below, temporaries are
numbered; every value from a policy file (operands, groups, claim names inside their getters) is
bound as a constant ``_k<n>`` of a namespace that has no builtins.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from .criteria import EXPLICIT_OPS, NOT_APPLICABLE_WHEN, UNKNOWN, Attribute, Predicate
from .model import PolicyInput

Test3 = Callable[[PolicyInput], bool | None]
# The policy-wide matcher: (bitmask of rules whose condition is true, bitmask of unknown ones).
Matcher = Callable[[PolicyInput], tuple[int, int]]

_TOKEN = "\x00"  # leaf references in a term's source; never in a Python expression
_TOKENS = re.compile("\x00([0-9]+)\x00")
_FACTS = (("principal", "p"), ("ownership", "o"), ("geo", "g"), ("compute", "c"), ("request", "r"))
_PROLOGUE = [f"    {var} = inp.{fact}" for fact, var in _FACTS]
_VAR = dict(_FACTS)

# Comparisons on a present, typed field value ``t`` against a constant ``k``.
_COMPARE = {
    "eq": "{t} == {k}",
    "in": "{t} in {k}",
    "in_group": "{t} in {k}",
    "not_in": "{t} not in {k}",
    "not_in_group": "{t} not in {k}",
    "gt": "{t} > {k}",
    "gte": "{t} >= {k}",
    "lt": "{t} < {k}",
    "lte": "{t} <= {k}",
    "contains": "{k} in {t}",
    "intersects": "not {k}.isdisjoint({t})",
}

# A set-valued attribute (``request.purpose``) read as "any of its values", see ``criteria``.
_MULTI = {
    "eq": "({k} in {v})",
    "contains": "({k} in {v})",
    "in": "(not {k}.isdisjoint({v}))",
    "in_group": "(not {k}.isdisjoint({v}))",
    "intersects": "(not {k}.isdisjoint({v}))",
    "not_in": "{k}.isdisjoint({v})",
    "not_in_group": "{k}.isdisjoint({v})",
}


def show(value: Any) -> str:
    """A value as a trace shows it (``unknown`` for an unknown one)."""
    if value is UNKNOWN:
        return "unknown"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, frozenset | set | tuple):
        return "[" + ", ".join(sorted(show(v) for v in value)) + "]"
    return str(value)


def show3(result: bool | None) -> str:
    """A condition's result as a trace shows it."""
    return "unknown" if result is None else show(result)


class Term:
    """One compiled condition: its generated expression and the readers traces use."""

    __slots__ = ("_emit", "_fn", "get", "kind", "name", "parts", "shown", "src")

    def __init__(
        self,
        emit: Emitter,
        src: str,
        kind: str,
        parts: tuple[Term, ...] = (),
        attr: Attribute | None = None,
        shown: str = "",
    ) -> None:
        self._emit = emit
        self._fn: Test3 | None = None
        self.src = src
        self.kind = kind  # leaf, all, any or not
        self.parts = parts
        self.name = attr.name if attr is not None else ""
        self.get = attr.get if attr is not None else None
        self.shown = shown

    @property
    def code(self) -> str:
        """The generated Python expression of this term."""
        return self._emit.expand(self.src)

    def test(self, inp: PolicyInput) -> bool | None:
        """This term's result (its expression compiled on first use)."""
        fn = self._fn
        if fn is None:
            fn = self._fn = self._emit.function(self.src)
        return fn(inp)

    def explain(self, inp: PolicyInput) -> str:
        """The term with its values and results, every branch shown (for traces)."""
        result = show3(self.test(inp))
        if self.get is not None:
            return f"{self.name}={show(self.get(inp))} {self.shown}: {result}"
        inner = "; ".join(p.explain(inp) for p in self.parts)
        return f"{self.kind}({inner}): {result}"

    def unknowns(self, inp: PolicyInput) -> tuple[str, ...]:
        """The attributes whose unknown value left this term unknown (empty if it is decided)."""
        if self.test(inp) is not None:
            return ()
        if self.get is not None:
            return (self.name,)
        # Parts that are decided return nothing: only the unknown ones speak.
        out: list[str] = []
        for p in self.parts:
            out.extend(n for n in p.unknowns(inp) if n not in out)
        return tuple(out)


class Emitter:
    """Builds the expressions of one policy and compiles them in one constants namespace."""

    def __init__(self) -> None:
        self.namespace: dict[str, Any] = {"__builtins__": {}}
        self.temps = 0
        # Leaves are shared: one Term per (attribute, operator, operand). A term's ``src`` names
        # its leaves by token; ``expand`` puts their expressions in (see ``matcher``).
        self._leaves: dict[tuple[Any, ...], Term] = {}
        self._leaf_exprs: list[str] = []

    def const(self, value: Any) -> str:
        name = f"_k{len(self.namespace)}"
        self.namespace[name] = value
        return name

    def temp(self) -> str:
        self.temps += 1
        return f"_t{self.temps}"

    # ------------------------------------------------------------------------------- terms

    def leaf(self, attr: Attribute, op: str, pred: Predicate, operand: Any, shown: str) -> Term:
        """``attr <op> operand``; ``operand`` is the normalised operand ``pred`` was built with."""
        key = (attr.name, op, type(operand), operand)  # the type: True == 1, but not here
        term = self._leaves.get(key)
        if term is None:
            self._leaf_exprs.append(self._leaf_src(attr, op, pred, operand))
            token = f"{_TOKEN}{len(self._leaf_exprs) - 1}{_TOKEN}"
            term = self._leaves[key] = Term(self, token, "leaf", attr=attr, shown=shown)
        return term

    def _leaf_src(self, attr: Attribute, op: str, pred: Predicate, operand: Any) -> str:
        if attr.fact is None or attr.field is None:
            # Special getters (purpose, model, claims): the getter, then the predicate.
            g, p = self.const(attr.get), self.const(pred)
            if attr.multi and op in _MULTI:  # a set of strings, never unknown
                return _MULTI[op].format(k=self.const(operand), v=f"{g}(inp)")
            if op in EXPLICIT_OPS or attr.multi:  # never unknown
                return f"{p}({g}(inp))"
            t = self.temp()
            return f"(None if ({t} := {g}(inp)) is {self.const(UNKNOWN)} else {p}({t}))"
        return self._field_src(attr, op, operand)

    def _field_src(self, attr: Attribute, op: str, operand: Any) -> str:
        # A plain field: absent fact -> false; empty field -> unknown (or false when the field
        # is never unknown); else the comparison on the typed value.
        f = f"{_VAR[str(attr.fact)]}.{attr.field}"
        fact = _VAR[str(attr.fact)]
        unk = attr.unknown_if_none
        guard = NOT_APPLICABLE_WHEN.get(str(attr.fact))
        na = f" and not {fact}.{guard}" if unk and guard else ""  # not applicable: not unknown
        if op == "exists":
            return (
                f"({fact} is not None and {f} is not None)"
                if operand
                else (f"({fact} is None or {f} is None)")
            )
        if op == "missing":
            if not unk:
                return "False" if operand else "True"
            missing = f"({fact} is not None and {f} is None{na})"
            return missing if operand else f"(not {missing})"
        t, k = self.temp(), self.const(operand)
        compare = _COMPARE["eq" if op == "eq" else op].format(t=t, k=k)
        empty = "False"
        if unk:
            empty = f"(False if {fact}.{guard} else None)" if na else "None"
        return f"(False if {fact} is None else ({empty} if ({t} := {f}) is None else {compare}))"

    def all_of(self, terms: Sequence[Term]) -> Term:
        """Kleene conjunction of ``terms``."""
        return self._combine("all", terms)

    def any_of(self, terms: Sequence[Term]) -> Term:
        """Kleene disjunction of ``terms``."""
        return self._combine("any", terms)

    def not_of(self, term: Term) -> Term:
        """Kleene negation: unknown stays unknown."""
        t = self.temp()
        return Term(self, f"(None if ({t} := {term.src}) is None else not {t})", "not", (term,))

    def _combine(self, kind: str, terms: Sequence[Term]) -> Term:
        # all(a, all(b, c)) is all(a, b, c), and likewise any.
        flat = [p for t in terms for p in (t.parts if t.kind == kind else (t,))]
        if len(flat) == 1:
            return flat[0]
        # One part deciding (false for all, true for any) decides at once; else any unknown
        # part makes the result unknown; else the neutral value. Parts are strict bools or None.
        # One flat ``or`` chain (no nesting per part: Python's parser bounds nested parentheses):
        # it stops at the first deciding part; only if none decides are all temporaries set.
        stop, neutral = ("True", "False") if kind == "any" else ("False", "True")
        temps = [self.temp() for _ in flat]
        decided = " or ".join(
            f"({t} := {p.src}) is {stop}" for t, p in zip(temps, flat, strict=True)
        )
        unknown = " or ".join(f"{t} is None" for t in temps)
        src = f"({stop} if {decided} else (None if {unknown} else {neutral}))"
        return Term(self, src, kind, tuple(flat))

    # ----------------------------------------------------------------------------- compile

    def expand(self, src: str, hoisted: frozenset[int] = frozenset()) -> str:
        """``src`` with each leaf token replaced by its expression (or, if hoisted, its name)."""

        def put(m: re.Match[str]) -> str:
            n = int(m.group(1))
            return f"_l{n}" if n in hoisted else self._leaf_exprs[n]

        return _TOKENS.sub(put, src)

    def function(self, src: str) -> Test3:
        """One expression as a function of the input."""
        body = ["def _f(inp):", *_PROLOGUE, f"    return {self.expand(src)}"]
        fn: Test3 = self._compile(body, "_f")
        return fn

    def matcher(self, sources: Sequence[str]) -> Matcher:
        """Every rule's expression in one function: (true bitmask, unknown bitmask). A leaf that
        several rules test (``compute.controlled: true``...) is computed once, up front."""
        uses = Counter(int(n) for src in sources for n in _TOKENS.findall(src))
        hoisted = frozenset(n for n, count in uses.items() if count > 1)
        lines = ["def _match(inp):", *_PROLOGUE, "    m = 0", "    u = 0"]
        lines += [f"    _l{n} = {self._leaf_exprs[n]}" for n in sorted(hoisted)]
        for i, src in enumerate(sources):
            lines += [
                f"    x = {self.expand(src, hoisted)}",
                "    if x:",
                f"        m |= {1 << i}",
                "    elif x is None:",
                f"        u |= {1 << i}",
            ]
        lines.append("    return m, u")
        fn: Matcher = self._compile(lines, "_match")
        return fn

    def _compile(self, lines: list[str], name: str) -> Any:
        code = compile("\n".join(lines), f"<policy {name}>", "exec")
        scope: dict[str, Any] = {}
        exec(code, self.namespace, scope)  # SECURITY: see the module docstring
        return scope[name]
