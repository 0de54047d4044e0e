"""Policy test cases (docs/policy.md): ``policies/tests/*.yaml`` → pass/fail per case.

A test file is a mapping (or, when the caller supplies the policy, a bare list of cases)::

    policy: [../us-remote-access.yaml]   # relative to this file; omitted → the caller's policy
    default_action: deny                 # optional, default deny
    today: 2026-11-25                    # optional, for licence expiry; default: the real date
    cases:
      - name: listed affiliate is denied
        context: {ownership.affiliated: true, entity.country: SG}  # attributes, docs/policy.md
        license_used: {D1234567: 4.9e7}  # optional: licence budget already used
        expect: {action: deny, rule: listed-affiliate, status: 451}

``expect`` takes ``action`` (required), ``rule`` (null = no rule), ``status``, ``license``,
``quotas`` (names), ``reasons`` (exact list) and ``reasons_include`` (subset). Structural problems
in test files raise ``ConfigError`` (all of them, located); failing cases are results, not errors.
"""

from __future__ import annotations

import datetime
import glob
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, Problem
from ..yamlsrc import LocDict, LocList, load_located
from .engine import PolicySet
from .inputs import input_from_attributes
from .model import Verdict

CASE_KEYS = ("name", "context", "expect", "today", "license_used")
EXPECT_KEYS = ("action", "rule", "status", "license", "quotas", "reasons", "reasons_include")
FILE_KEYS = ("policy", "default_action", "today", "cases")


@dataclass(slots=True)
class CaseResult:
    """The outcome of one test case."""

    file: str
    line: int
    name: str
    passed: bool
    failures: list[str] = field(default_factory=list)
    verdict: Verdict | None = None

    @property
    def message(self) -> str:
        """The failures on one line (empty when the case passed)."""
        return "; ".join(self.failures)

    def __str__(self) -> str:
        head = f"{'PASS' if self.passed else 'FAIL'} {self.file}:{self.line}: {self.name}"
        return head if self.passed else head + "\n    " + "\n    ".join(self.failures)


def _as_date(value: Any) -> datetime.date | None:
    if isinstance(value, datetime.datetime):
        return value.date()
    if isinstance(value, datetime.date):
        return value
    if isinstance(value, str):
        try:
            return datetime.date.fromisoformat(value)
        except ValueError:
            return None
    return None


def _check(expect: LocDict, v: Verdict) -> list[str]:
    failures: list[str] = []

    def differ(what: str, want: Any, got: Any) -> None:
        failures.append(f"expected {what} {want!r}, got {got!r}")

    if expect["action"] != v.action:
        differ("action", expect["action"], v.action)
    if "rule" in expect and expect["rule"] != v.rule:
        differ("rule", expect["rule"], v.rule)
    if "status" in expect and expect["status"] != v.status:
        differ("status", expect["status"], v.status)
    if "license" in expect:
        got = v.license.id if v.license is not None else None
        if expect["license"] != got:
            differ("license", expect["license"], got)
    if "quotas" in expect and list(expect["quotas"]) != [q.name for q in v.quotas]:
        differ("quotas", list(expect["quotas"]), [q.name for q in v.quotas])
    if "reasons" in expect and list(expect["reasons"]) != v.reasons:
        differ("reasons", list(expect["reasons"]), v.reasons)
    if "reasons_include" in expect:
        missing = [r for r in expect["reasons_include"] if r not in v.reasons]
        if missing:
            failures.append(f"reasons {v.reasons!r} lack {missing!r}")
    return failures


def _essence(v: Verdict) -> tuple[Any, ...]:
    lic = v.license.id if v.license is not None else None
    return (v.action, v.rule, tuple(v.reasons), v.status, lic, tuple(q.name for q in v.quotas))


class _Runner:
    def __init__(
        self,
        policy: PolicySet | None,
        today: datetime.date | None,
        load: Callable[[Sequence[str], str], PolicySet],
    ) -> None:
        self.policy = policy
        self.today = today
        self.load = load
        self.cache: dict[tuple[tuple[str, ...], str], PolicySet] = {}
        self.problems: list[Problem | str] = []
        self.results: list[CaseResult] = []

    def err(self, file: str, line: int | None, path: str, message: str) -> None:
        self.problems.append(Problem(file, line, path, message))

    def run_file(self, path: str) -> None:
        try:
            doc = load_located(path)
        except ConfigError as exc:
            self.problems.extend(exc.problems)
            return
        policy = self.policy
        today = self.today
        if isinstance(doc, LocList):
            cases: Any = doc
            if policy is None:
                self.err(path, doc.line, "", "a bare list of cases needs a policy (add policy:)")
                return
        elif isinstance(doc, LocDict):
            for key in doc:
                if key not in FILE_KEYS:
                    self.err(path, doc.line_of(key), key, "unknown key")
            cases = doc.get("cases")
            if not isinstance(cases, LocList):
                self.err(path, doc.line_of("cases"), "cases", "expected a list of cases")
                return
            if "today" in doc:
                today = _as_date(doc["today"])
                if today is None:
                    self.err(path, doc.line_of("today"), "today", "expected a date (YYYY-MM-DD)")
                    return
            if "policy" in doc:
                policy = self._policy(path, doc)
                if policy is None:
                    return
            elif policy is None:
                self.err(path, doc.line, "", "no policy: add policy: [files]")
                return
        else:
            self.err(path, getattr(doc, "line", None), "", "expected a mapping or a list of cases")
            return
        for i, case in enumerate(cases):
            self._case(path, cases.line_of(i), f"cases[{i}]", case, policy, today)

    def _policy(self, path: str, doc: LocDict) -> PolicySet | None:
        files = doc["policy"]
        files = [files] if isinstance(files, str) else files
        if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
            self.err(path, doc.line_of("policy"), "policy", "expected a file name or a list")
            return None
        default = doc.get("default_action", "deny")
        folder = os.path.dirname(path)
        resolved = tuple(f if os.path.isabs(f) else os.path.join(folder, f) for f in files)
        key = (tuple(os.path.realpath(f) for f in resolved), str(default))
        if key not in self.cache:
            try:
                self.cache[key] = self.load(resolved, str(default))
            except ConfigError as exc:
                self.problems.extend(exc.problems)
                return None
        return self.cache[key]

    def _case(
        self,
        path: str,
        line: int,
        where: str,
        case: Any,
        policy: PolicySet,
        today: datetime.date | None,
    ) -> None:
        if not isinstance(case, LocDict):
            self.err(path, line, where, "a case must be a mapping")
            return
        bad = [k for k in case if k not in CASE_KEYS]
        for k in bad:
            self.err(path, case.line_of(k), f"{where}.{k}", "unknown key")
        name = case.get("name")
        if not isinstance(name, str):
            self.err(path, line, where, "missing required key 'name'")
            return
        expect = case.get("expect")
        if not isinstance(expect, LocDict) or "action" not in expect:
            self.err(
                path, case.line_of("expect"), f"{where}.expect", "expected a mapping with action"
            )
            return
        for k in expect:
            if k not in EXPECT_KEYS:
                self.err(path, expect.line_of(k), f"{where}.expect.{k}", "unknown key")
                bad.append(k)
        if "today" in case:
            today = _as_date(case["today"])
            if today is None:
                self.err(path, case.line_of("today"), f"{where}.today", "expected a date")
                return
        context = case.get("context") or {}
        used = case.get("license_used") or {}
        if not isinstance(context, dict) or not isinstance(used, dict):
            self.err(path, line, where, "context and license_used must be mappings")
            return
        try:
            inp = input_from_attributes(context, today or datetime.date.today(), license_used=used)
        except ValueError as exc:
            self.err(path, case.line_of("context"), f"{where}.context", str(exc))
            return
        if bad:
            return
        verdict = policy.evaluate(inp, trace=True)
        failures = _check(expect, verdict)
        # The generated fast path must agree with the traced (reference) evaluation.
        fast = policy.evaluate(inp)
        if _essence(fast) != _essence(verdict):
            failures.append(f"fast path disagrees: {_essence(fast)!r} != {_essence(verdict)!r}")
        self.results.append(CaseResult(path, line, name, not failures, failures, verdict))


def _default_load(files: Sequence[str], default_action: str) -> PolicySet:
    from . import load_policy_set  # the package imports this module's siblings, not this one

    return load_policy_set(files, default_action=default_action)


def find_test_files(target: str) -> list[str]:
    """The test files under ``target`` (a folder: its ``*.yaml``/``*.yml``; or one file)."""
    if os.path.isdir(target):
        found = glob.glob(os.path.join(target, "*.yaml")) + glob.glob(os.path.join(target, "*.yml"))
        return sorted(found)
    return [target]


def run_tests(
    target: str,
    *,
    policy: PolicySet | None = None,
    today: datetime.date | None = None,
) -> list[CaseResult]:
    """Run every case of the test files at ``target``; raises ``ConfigError`` for broken files."""
    runner = _Runner(policy, today, _default_load)
    files = find_test_files(target)
    if not files:
        raise ConfigError([Problem(target, None, "", "no policy test files found")])
    for path in files:
        runner.run_file(path)
    if runner.problems:
        raise ConfigError(runner.problems)
    return runner.results


def format_results(results: Sequence[CaseResult]) -> str:
    """One line per case (failures indented below), then a summary line."""
    lines = [str(r) for r in results]
    failed = sum(1 for r in results if not r.passed)
    lines.append(f"{len(results) - failed} passed, {failed} failed")
    return "\n".join(lines)
