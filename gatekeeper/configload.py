"""The configuration walker: checks parsed YAML against the settings dataclasses of ``config.py``.

The walk is driven by the dataclasses: every field is a key, its annotation is the type to check,
its default makes it optional. Extra checks (ranges, choices, URLs, CIDRs, paths) are small
functions declared per (class, field) in ``config.py``'s table, so a new setting needs one line,
not a new parser. Every problem is collected with its ``file:line`` and key path; nothing here
knows a particular setting.
"""

from __future__ import annotations

import ipaddress
import os
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, fields, is_dataclass
from typing import Any
from urllib.parse import urlsplit

from .errors import Problem
from .yamlsrc import line_of

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_TOKEN_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


class Ctx:
    """Collects problems while walking one file."""

    def __init__(
        self, filename: str, base_dir: str, checks: Mapping[tuple[type, str], Check]
    ) -> None:
        self.filename = filename
        self.base_dir = base_dir
        self.checks = checks  # extra checks per (dataclass, field name)
        self.problems: list[Problem] = []

    def err(self, line: int | None, path: str, message: str) -> None:
        self.problems.append(Problem(self.filename, line, path, message))


Check = Callable[[Any, Ctx, int | None, str], Any]


def choice(*allowed: str) -> Check:
    def check(value: Any, ctx: Ctx, line: int | None, path: str) -> Any:
        if value not in allowed:
            ctx.err(line, path, f"must be one of {', '.join(allowed)} (got {value!r})")
        return value

    return check


def value_range(lo: float | None = None, hi: float | None = None) -> Check:
    def check(value: Any, ctx: Ctx, line: int | None, path: str) -> Any:
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            bounds = f">= {lo}" if hi is None else f"between {lo} and {hi}"
            ctx.err(line, path, f"must be {bounds} (got {value!r})")
        return value

    return check


def cidr(value: Any, ctx: Ctx, line: int | None, path: str) -> Any:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        ctx.err(line, path, f"not an IP network in CIDR form: {value!r}")
        return value


def url_of(*schemes: str) -> Check:
    def check(value: Any, ctx: Ctx, line: int | None, path: str) -> Any:
        try:
            parts = urlsplit(value)
            ok = parts.scheme in schemes and bool(parts.hostname)
            if ok:
                _ = parts.port  # raises ValueError on a bad port
        except ValueError:
            ok = False
        if not ok:
            ctx.err(line, path, f"not a valid {'/'.join(schemes)} URL: {value!r}")
        return value

    return check


def store_url(value: Any, ctx: Ctx, line: int | None, path: str) -> Any:
    if value == "memory":
        return value
    return url_of("redis", "rediss", "redis+cluster")(value, ctx, line, path)


def file_path(value: Any, ctx: Ctx, line: int | None, path: str) -> Any:
    if not value:
        ctx.err(line, path, "must not be empty")
        return value
    return os.path.normpath(os.path.join(ctx.base_dir, value))


def db_path(value: Any, ctx: Ctx, line: int | None, path: str) -> Any:
    return value if value == "builtin" else file_path(value, ctx, line, path)


def regex(value: Any, ctx: Ctx, line: int | None, path: str) -> Any:
    try:
        re.compile(value)
    except re.error as exc:
        ctx.err(line, path, f"invalid regular expression: {exc}")
    return value


def path_prefix(value: Any, ctx: Ctx, line: int | None, path: str) -> Any:
    if not value.startswith("/"):
        ctx.err(line, path, f"must start with '/' (got {value!r})")
    return value


def http_methods(value: Any, ctx: Ctx, line: int | None, path: str) -> Any:
    out = []
    for m in value:
        if not _TOKEN_RE.match(m):
            ctx.err(line, path, f"not an HTTP method: {m!r}")
        out.append(m.upper())
    return tuple(out)


def header_names(value: Any, ctx: Ctx, line: int | None, path: str) -> Any:
    for h in value:
        if not _TOKEN_RE.match(h):
            ctx.err(line, path, f"not a header name: {h!r}")
    return value


def nonempty(value: Any, ctx: Ctx, line: int | None, path: str) -> Any:
    if not value:
        ctx.err(line, path, "must not be empty")
    return value


def each(check: Check) -> Check:
    def run(value: Any, ctx: Ctx, line: int | None, path: str) -> Any:
        return tuple(check(v, ctx, line, f"{path}[{i}]") for i, v in enumerate(value))

    return run


def _substitute_env(value: str, ctx: Ctx, line: int | None, path: str) -> str:
    def repl(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in os.environ:
            ctx.err(line, path, f"environment variable {name} is not set")
            return ""
        return os.environ[name]

    return _ENV_RE.sub(repl, value)


def _convert(tp: Any, raw: Any, ctx: Ctx, line: int | None, path: str) -> Any:
    """Check ``raw`` against annotation ``tp``; returns the converted value (or None on error)."""
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if raw is None:
            return None
        return _convert(args[0], raw, ctx, line, path)
    if origin is dict:
        if not isinstance(raw, dict):
            ctx.err(line, path, f"must be a mapping (got {type(raw).__name__})")
            return None
        out_map: dict[str, str] = {}
        for key, item in raw.items():
            item_path = f"{path}.{key}"
            if not isinstance(key, str) or isinstance(item, bool) or not isinstance(item, str):
                ctx.err(line_of(raw, key, line), item_path, "must map strings to strings")
                continue
            out_map[key] = _substitute_env(item, ctx, line_of(raw, key, line), item_path)
        return out_map
    if origin is tuple:
        (item_tp, _ellipsis) = typing.get_args(tp)
        if isinstance(raw, str | int | float) and not isinstance(raw, bool) and item_tp is str:
            raw = [raw]  # a single value where a list is expected is a common, harmless shorthand
        if not isinstance(raw, list):
            ctx.err(line, path, f"must be a list (got {type(raw).__name__})")
            return None
        out = []
        for i, item in enumerate(raw):
            item_line = line_of(raw, i, line)
            out.append(_convert(item_tp, item, ctx, item_line, f"{path}[{i}]"))
        return tuple(out)
    if is_dataclass(tp):
        if not isinstance(raw, dict):
            ctx.err(line, path, f"must be a mapping (got {type(raw).__name__})")
            return None
        return build(tp, raw, ctx, path)
    if tp is bool:
        if not isinstance(raw, bool):
            ctx.err(line, path, f"must be a boolean (got {raw!r})")
            return None
        return raw
    if tp is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            ctx.err(line, path, f"must be an integer (got {raw!r})")
            return None
        return raw
    if tp is float:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            ctx.err(line, path, f"must be a number (got {raw!r})")
            return None
        return float(raw)
    if tp is str:
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            ctx.err(line, path, f"must be a string (got {type(raw).__name__})")
            return None
        return _substitute_env(str(raw), ctx, line, path)
    raise TypeError(f"unsupported config type {tp!r}")  # a programming error, not a user one


def build(cls: Any, raw: dict[str, Any], ctx: Ctx, path: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls) if f.name not in ("source", "base_dir")}
    kwargs: dict[str, Any] = {}
    own_line = line_of(raw)
    ok = True
    for key in raw:
        if key not in known:
            ctx.err(line_of(raw, key, own_line), join_path(path, key), "unknown key")
    for name, f in known.items():
        key_path = join_path(path, name)
        if name not in raw:
            if f.default is MISSING and f.default_factory is MISSING:
                ctx.err(own_line, key_path, "required key is missing")
                ok = False
            continue
        line = line_of(raw, name, own_line)
        before = len(ctx.problems)
        value = _convert(hints[name], raw[name], ctx, line, key_path)
        if len(ctx.problems) > before:
            ok = False
            continue
        check = ctx.checks.get((cls, name))
        if check is not None and value is not None:
            value = check(value, ctx, line, key_path)
        kwargs[name] = value
    if not ok:
        return None
    try:
        return cls(**kwargs)
    except TypeError as exc:  # pragma: no cover - guarded by the checks above
        ctx.err(own_line, path, str(exc))
        return None


def join_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
