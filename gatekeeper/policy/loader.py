"""Read policy files and their ``include:`` chains, keeping line numbers for every value.

``load_sources(files)`` returns the parsed documents in dependency order (an included file comes
before the file that includes it; a file reached twice is read once) and every problem found:
unreadable or invalid YAML, a bad ``include`` value, a missing included file, an include cycle.
Includes resolve relative to the including file's folder.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, Problem
from ..yamlsrc import LocDict, LocList, load_located

MAX_INCLUDE_DEPTH = 16
MAX_FILES = 256


@dataclass(frozen=True, slots=True)
class Source:
    """One parsed policy document: its real path, the name used in messages, its content."""

    path: str
    display: str
    doc: Any


class _Walk:
    def __init__(self) -> None:
        self.out: list[Source] = []
        self.problems: list[Problem | str] = []
        self.seen: set[str] = set()
        self.stack: list[tuple[str, str]] = []  # (real path, display) of files being read

    def visit(self, path: str, display: str, via: tuple[str, int | None, str] | None) -> None:
        real = os.path.realpath(path)
        if any(r == real for r, _ in self.stack):
            chain = [d for _, d in self.stack[[r for r, _ in self.stack].index(real) :]]
            self._problem(via, "include cycle: " + " -> ".join([*chain, display]), display)
            return
        if real in self.seen:
            return
        if len(self.stack) >= MAX_INCLUDE_DEPTH:
            self._problem(via, f"includes nested deeper than {MAX_INCLUDE_DEPTH}", display)
            return
        if len(self.seen) >= MAX_FILES:
            self._problem(via, f"more than {MAX_FILES} policy files", display)
            return
        if via is not None and not os.path.isfile(path):
            self._problem(via, f"cannot read {display!r}: no such file", display)
            return
        self.seen.add(real)
        try:
            doc = load_located(path)
        except ConfigError as exc:
            self.problems.extend(_reprefix(exc.problems, path, display))
            return
        self.stack.append((real, display))
        try:
            if isinstance(doc, LocDict) and "include" in doc:
                self._includes(doc, display, os.path.dirname(path), os.path.dirname(display))
        finally:
            self.stack.pop()
        self.out.append(Source(real, display, doc))

    def _includes(self, doc: LocDict, display: str, folder: str, shown_folder: str) -> None:
        includes = doc["include"]
        line = doc.line_of("include")
        if not isinstance(includes, LocList):
            self.problems.append(Problem(display, line, "include", "expected a list of file names"))
            return
        for i, name in enumerate(includes):
            where = (display, includes.line_of(i), f"include[{i}]")
            if not isinstance(name, str) or not name.strip():
                self.problems.append(Problem(display, where[1], where[2], "expected a file name"))
                continue
            target = name if os.path.isabs(name) else os.path.join(folder, name)
            shown = (
                name if os.path.isabs(name) else os.path.normpath(os.path.join(shown_folder, name))
            )
            self.visit(target, shown, where)

    def _problem(self, via: tuple[str, int | None, str] | None, message: str, display: str) -> None:
        if via is None:
            self.problems.append(Problem(display, None, "", message))
        else:
            self.problems.append(Problem(via[0], via[1], via[2], message))


def _reprefix(problems: list[str], path: str, display: str) -> list[Problem | str]:
    # load_located names the file by the path it opened; show the name the author wrote instead.
    out: list[Problem | str] = []
    for p in problems:
        out.append(display + p[len(path) :] if p.startswith(path) else p)
    return out


def load_sources(files: Sequence[str]) -> tuple[list[Source], list[Problem | str]]:
    """Parse ``files`` and everything they include; returns (sources, problems)."""
    walk = _Walk()
    for f in files:
        walk.visit(f, f, None)
    problems: list[Problem | str] = list(walk.problems)
    return walk.out, problems
