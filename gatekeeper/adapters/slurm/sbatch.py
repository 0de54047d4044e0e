"""The ``#SBATCH`` block of a batch script, read with sbatch's own rules.

- Directives are lines that begin (in the first column) with ``#SBATCH`` or ``#SLURM``. The block
  ends at the first line that is neither blank nor a comment: sbatch reads no directive after it.
- Each directive line is split into arguments as sbatch splits it: whitespace separates, single
  or double quotes group (and are removed), a backslash takes the next character as it is, and
  an unquoted ``#`` starts a comment that runs to the end of the line.
- The arguments of all lines form one command line, read as ``getopt_long`` reads it in sbatch:
  long options with ``=value`` or the value in the next argument, a long name shortened to any
  unique prefix of sbatch's option names (an exact name always wins; an ambiguous prefix is an
  error), short options alone, clustered, or with their value attached (``-N4``, ``-wnode1``);
  reading stops at the first argument that is not an option, which sbatch refuses.

A line ``#SBATCH hetjob`` (or ``packjob``) starts the options of the next component of a
heterogeneous job, each component read on its own. Everything sbatch would refuse and every
option sbatch does not know (plugin options included) is refused here (``unmeasurable-request``
naming the directive): a guess could under-count.
"""

from __future__ import annotations

import re

from ...context import R_UNMEASURABLE
from ...errors import BadRequest
from ..body import sanitize
from .schema import SBATCH_ARGS, SBATCH_SHORT

MAX_ARGS = 2000  # arguments across the block; real scripts carry a few dozen
MAX_LINE = 64 * 1024
MAX_COMPONENTS = 128  # heterogeneous-job components of one script
_SEPARATORS = ("hetjob", "packjob")
_NAMES = tuple(sorted(SBATCH_ARGS))

_SPECIAL = re.compile(r"[\"'\\#]")
Option = tuple[str, str | None]  # (long name, value or None)


def _refuse(what: str, why: str) -> BadRequest:
    return BadRequest(R_UNMEASURABLE, f"script:#SBATCH {sanitize(what)}: {why}")


def has_directives(script: str) -> bool:
    """Whether ``script`` may hold a directive at all (the cheap test before reading it)."""
    return "#SBATCH" in script or "#SLURM" in script


def _split(text: str) -> list[str]:
    """One directive line's arguments, split as sbatch splits them."""
    if not _SPECIAL.search(text):
        return text.split()  # no quote, escape or comment: whitespace alone separates
    args: list[str] = []
    i, end = 0, len(text)
    while True:
        while i < end and text[i].isspace():
            i += 1
        if i >= end or text[i] == "#":
            return args
        arg: list[str] = []
        quote = ""
        while i < end and (quote or not text[i].isspace()):
            ch = text[i]
            if ch == "\\":
                if i + 1 < end:
                    arg.append(text[i + 1])
                i += 2
                continue
            if quote:
                if ch == quote:
                    quote = ""
                else:
                    arg.append(ch)
            elif ch in "\"'":
                quote = ch
            elif ch == "#":
                break
            else:
                arg.append(ch)
            i += 1
        if quote:
            raise _refuse(text.strip(), f"unmatched {quote}")
        args.append("".join(arg))
        if i < end and text[i] == "#":
            return args


def _ends_block(line: str) -> bool:
    """Whether ``line`` is the first command (neither blank nor a comment): the block ends."""
    if line[:1] == "#":
        return False
    stripped = line.lstrip()
    return bool(stripped) and stripped[0] != "#"


# Whole lines that are blank or comments (``_ends_block`` false), each with its ``\n``: ``\s`` is
# the whitespace ``str.lstrip`` strips, and lines end at ``\n`` alone, as ``block_arguments`` reads.
_BLOCK_LINES = re.compile(r"(?:[^\S\n]*(?:#[^\n]*)?\n)*")


def block_text(script: str) -> str:
    """The lines of ``script`` before its first command: all that sbatch reads directives from
    (``read_script`` of it equals ``read_script`` of the whole script)."""
    end = _BLOCK_LINES.match(script).end()  # type: ignore[union-attr]  # ``*`` always matches
    if script.find("\n", end) < 0 and not _ends_block(script[end:]):
        return script  # the last line is no command either: no command at all
    return script[: max(end - 1, 0)]


def block_arguments(script: str) -> list[list[str]]:
    """The arguments of the directive block, in order, one list per heterogeneous-job component
    (``#SBATCH hetjob`` starts the next one; the rest of its line belongs to that one)."""
    components: list[list[str]] = [[]]
    total = 0
    for line in script.split("\n"):
        if line[:1] != "#":
            if _ends_block(line):
                break  # the first command ends the block
            continue
        if line.startswith("#SBATCH"):
            rest = line[7:]
        elif line.startswith("#SLURM"):
            rest = line[6:]
        else:
            continue  # a comment
        if len(line) > MAX_LINE:
            raise _refuse(line[:40], "directive line too long")
        words = _split(rest)
        if words and words[0].lower() in _SEPARATORS and rest.split(None, 1)[0] == words[0]:
            components.append([])
            words = words[1:]
            if len(components) > MAX_COMPONENTS:
                raise BadRequest("bad-script", f"more than {MAX_COMPONENTS} job components")
        components[-1] += words
        total += len(words)
        if total > MAX_ARGS:
            raise BadRequest("bad-script", f"more than {MAX_ARGS} #SBATCH arguments")
    return components


def _long(name: str) -> str:
    """The option a long name (or a unique prefix of one) stands for."""
    if name in SBATCH_ARGS:
        return name
    matches = [n for n in _NAMES if n.startswith(name)] if name else []
    if not matches:
        raise _refuse("--" + name, "unknown sbatch option")
    if len(matches) > 1:
        raise _refuse("--" + name, f"ambiguous prefix of {', '.join(matches[:4])}")
    return matches[0]


def read_options(args: list[str]) -> list[Option]:
    """``getopt_long`` over ``args`` with sbatch's option table: (long name, value) in order."""
    out: list[Option] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            if i < len(args):
                raise _refuse(args[i], "argument after the end of options")
            break
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            option = _long(name)
            kind = SBATCH_ARGS[option]
            if kind == 0 and eq:
                raise _refuse(arg, "option takes no value")
            if kind == 1 and not eq:
                if i >= len(args):
                    raise _refuse(arg, "missing value")
                value, i = args[i], i + 1
            out.append((option, value if (eq or kind == 1) else None))
        elif arg.startswith("-") and len(arg) > 1:
            i = _short_cluster(arg, args, i, out)
        else:
            raise _refuse(arg, "not an option (sbatch refuses it)")
    return out


def _short_cluster(arg: str, args: list[str], i: int, out: list[Option]) -> int:
    """Read ``-abc`` / ``-N4`` / ``-N 4``; returns the index of the next argument."""
    j = 1
    while j < len(arg):
        letter = arg[j]
        option = SBATCH_SHORT.get(letter)
        if option is None:
            raise _refuse("-" + letter, "unknown sbatch option")
        kind = SBATCH_ARGS[option]
        rest = arg[j + 1 :]
        if kind == 0:
            out.append((option, None))
            j += 1
            continue
        if rest:
            out.append((option, rest))
        elif kind == 1:
            if i >= len(args):
                raise _refuse(arg, "missing value")
            out.append((option, args[i]))
            i += 1
        else:
            out.append((option, None))
        break
    return i


def read_script(script: str) -> list[list[Option]]:
    """The options of ``script``'s directive block, per component (empty: no directive)."""
    if not has_directives(script):
        return []
    components = [read_options(args) for args in block_arguments(script)]
    return components if any(components) else []
