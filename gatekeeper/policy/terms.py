"""Compiled conditions: three-valued (Kleene) predicates over ``PolicyInput``.

A condition evaluates to ``True``, ``False`` or ``None`` (unknown). A comparison with an unknown
attribute value is unknown; ``exists`` and ``missing`` are always true or false. Combinators
follow Kleene's logic: ``not`` of unknown is unknown; ``all`` is false if any part is false, else
unknown if any part is unknown; ``any`` is true if any part is true, else unknown if any part is
unknown. Parts are evaluated left to right and stop at the first deciding one.

Each ``Term`` carries the one evaluator (``test``) and two readers built on it: ``explain`` for
traces and ``unknowns`` (the attributes whose unknown value made the result unknown) for reasons.
Both call ``test`` of the same nodes, so a trace can never disagree with a decision.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from .criteria import EXPLICIT_OPS, UNKNOWN, Attribute, Predicate
from .model import PolicyInput

Test3 = Callable[[PolicyInput], bool | None]


@dataclass(frozen=True, slots=True)
class Term:
    """One compiled condition: its evaluator and the readers used by traces and reasons."""

    test: Test3
    explain: Callable[[PolicyInput], str]
    unknowns: Callable[[PolicyInput], tuple[str, ...]]
    kind: str = "leaf"  # leaf, all, any or not
    parts: tuple[Term, ...] = ()


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


def leaf(attr: Attribute, op: str, pred: Predicate, operand: Any, shown: str) -> Term:
    """``attr <op> operand``: unknown when the value is, except for ``exists``/``missing``.
    ``operand`` is the normalised operand ``pred`` was built with (a value or a frozenset)."""
    get = attr.get
    name = attr.name
    test: Test3
    fused = _FUSED.get(op)
    if fused is not None and attr.fact is not None and attr.field is not None:
        test = fused(attrgetter(attr.fact), attrgetter(attr.field), attr.unknown_if_none, operand)
    elif op in EXPLICIT_OPS or attr.multi:  # never unknown: no check

        def test(inp: PolicyInput) -> bool | None:
            return pred(get(inp))

    else:

        def test(inp: PolicyInput) -> bool | None:
            v = get(inp)
            return None if v is UNKNOWN else pred(v)

    def explain(inp: PolicyInput) -> str:
        return f"{name}={show(get(inp))} {shown}: {show3(test(inp))}"

    def unknowns(inp: PolicyInput) -> tuple[str, ...]:
        return (name,) if test(inp) is None else ()

    return Term(test, explain, unknowns)


# Plain fields with the common operators: read and compare in one closure (no predicate call).
# Same meaning as the predicates in ``criteria``: an absent fact is false, an empty field is
# unknown or false (``unknown_if_none``), the comparison is then on a typed, present value.
_Fuse = Callable[[Callable[[Any], Any], Callable[[Any], Any], bool, Any], Test3]


def _fuse_compare(kind: str) -> _Fuse:
    """``eq``/``in``/``not_in`` on a plain field: one C-level check of the present value."""

    def make(
        fact_of: Callable[[Any], Any], value_of: Callable[[Any], Any], unk: bool, x: Any
    ) -> Test3:
        # x.__eq__ answers NotImplemented for another type, which ``is want`` reads as false;
        # a number is compared as a float so that 64 == 64.0.
        if kind == "eq" and isinstance(x, int) and not isinstance(x, bool):
            x = float(x)
        check: Callable[[Any], Any] = x.__eq__ if kind == "eq" else x.__contains__
        want = kind != "not_in"
        empty = None if unk else False

        def test(inp: PolicyInput) -> bool | None:
            o = fact_of(inp)
            if o is None:
                return False
            v = value_of(o)
            return empty if v is None else check(v) is want

        return test

    return make


def _fuse_exists(
    fact_of: Callable[[Any], Any], value_of: Callable[[Any], Any], unk: bool, want: Any
) -> Test3:
    def test(inp: PolicyInput) -> bool | None:
        o = fact_of(inp)
        return (o is not None and value_of(o) is not None) is want

    return test


def _fuse_missing(
    fact_of: Callable[[Any], Any], value_of: Callable[[Any], Any], unk: bool, want: Any
) -> Test3:
    def test(inp: PolicyInput) -> bool | None:
        o = fact_of(inp)
        return (unk and o is not None and value_of(o) is None) is want

    return test


_FUSED: dict[str, _Fuse] = {
    "exists": _fuse_exists,
    "missing": _fuse_missing,
    "eq": _fuse_compare("eq"),
    "in": _fuse_compare("in"),
    "in_group": _fuse_compare("in"),
    "not_in": _fuse_compare("not_in"),
    "not_in_group": _fuse_compare("not_in"),
}


def _flat(kind: str, terms: Sequence[Term]) -> Sequence[Term]:
    # all(a, all(b, c)) is all(a, b, c) (and likewise any): one call less per level.
    return [p for t in terms for p in (t.parts if t.kind == kind else (t,))]


def all_of(terms: Sequence[Term]) -> Term:
    """Kleene conjunction of ``terms``."""
    return _combine("all", terms)


def any_of(terms: Sequence[Term]) -> Term:
    """Kleene disjunction of ``terms``."""
    return _combine("any", terms)


def _combine(kind: str, terms: Sequence[Term]) -> Term:
    # One part deciding (false for all, true for any) decides; else any unknown part makes the
    # result unknown; else the neutral value. Results are strict bools or None, so ``is`` is exact.
    terms = _flat(kind, terms)
    if len(terms) == 1:
        return terms[0]
    stop = kind == "any"
    neutral = not stop
    tests = tuple(t.test for t in terms)
    test: Test3
    if len(tests) == 2:
        a, b = tests

        def test(inp: PolicyInput) -> bool | None:
            x = a(inp)
            if x is stop:
                return stop
            y = b(inp)
            if y is stop:
                return stop
            return None if x is None or y is None else neutral

    else:

        def test(inp: PolicyInput) -> bool | None:
            out: bool | None = neutral
            for t in tests:
                r = t(inp)
                if r is stop:
                    return stop
                if r is None:
                    out = None
            return out

    return _group(kind, test, terms)


def not_of(term: Term) -> Term:
    """Kleene negation: unknown stays unknown."""
    inner = term.test

    def test(inp: PolicyInput) -> bool | None:
        r = inner(inp)
        return None if r is None else not r

    def explain(inp: PolicyInput) -> str:
        return f"not({term.explain(inp)}): {show3(test(inp))}"

    return Term(test, explain, term.unknowns, "not", (term,))


def _group(kind: str, test: Test3, terms: Sequence[Term]) -> Term:
    explains = tuple(t.explain for t in terms)
    readers = tuple(t.unknowns for t in terms)

    def explain(inp: PolicyInput) -> str:
        # Every branch is shown, not only up to the short-circuit: the reader wants all of it.
        return f"{kind}({'; '.join(e(inp) for e in explains)}): {show3(test(inp))}"

    def unknowns(inp: PolicyInput) -> tuple[str, ...]:
        if test(inp) is not None:
            return ()
        # Parts that are true (all) or false (any) return nothing: only unknown parts speak.
        out: list[str] = []
        for r in readers:
            out.extend(n for n in r(inp) if n not in out)
        return tuple(out)

    return Term(test, explain, unknowns, kind, tuple(terms))
