"""Hostile-input-safe loading of request bodies for the compute adapters.

Bodies are untrusted. JSON is parsed strictly (UTF-8 only, no NaN/Infinity, duplicate keys refused
because the scheduler behind us may take a different one of the duplicates than we did), YAML with
the safe constructor only, a bounded number of alias uses, duplicate keys refused and no custom
tags. Both are then walked once with a depth and node budget, which also defuses a YAML
billion-laughs document (its shared sub-trees count every time they are reached).
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
import yaml

from ..errors import BadRequest

MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 200_000
MAX_ALIASES = 100
MAX_LABEL = 64  # characters of a client-supplied string kept for the audit record


def sanitize(text: str, limit: int = MAX_LABEL) -> str:
    """A client string made safe for logs and the audit record (valid UTF-8, bounded length)."""
    return text[:limit].encode("utf-8", "replace").decode("utf-8")


# ----------------------------------------------------------------------------- body loading


def _refuse_constant(name: str) -> Any:
    raise BadRequest("bad-json", f"{name} is not valid JSON")


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        # SECURITY: duplicate keys are read differently by different parsers (first vs last wins)
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise BadRequest("duplicate-key", f"duplicate JSON key {sanitize(key)!r}")
            seen.add(key)
    return result


def _check_size(body: bytes) -> None:
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest("body-too-large", f"body larger than {MAX_BODY_BYTES} bytes", status=413)


def _decode(body: bytes, reason: str) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(reason, f"body is not UTF-8: {exc.reason}") from None


_BOM = b"\xef\xbb\xbf"


# Every byte but ``:``, ``{`` and ``[`` (see ``_fast_json``).
_NOT_STRUCTURAL = bytes(b for b in range(256) if b not in b":{[")
_U_ESCAPE = re.compile(rb"\\u")


def _fast_json(body: bytes) -> Any:
    """orjson's parse when it provably equals the strict one below, else ``_SLOW``.

    orjson keeps the last of duplicate keys, so duplicates are ruled out by counting: outside
    strings a JSON text has a ``:`` only between a key and its value, so the text's colons equal
    the parsed members plus the colons inside parsed strings -- unless a member was dropped
    (a duplicate), which leaves more colons in the text than the tree accounts for. The tree's
    count is taken from orjson's own re-serialisation (which writes one ``:`` per member and never
    escapes a ``:`` inside a string), in C rather than by a Python walk. A ``\\u`` escape could
    spell a colon (or a lone surrogate orjson refuses), so such bodies, anything orjson refuses
    and anything over the shape limits take the strict path, which produces the exact same
    answers and errors as before.
    """
    if body[:3] == _BOM or (b"\\" in body and _U_ESCAPE.search(body) is not None):
        return _SLOW
    if len(body) > MAX_NODES:
        return _walked_json(body)
    # One pass keeps only the colons and opening brackets (a handful of bytes in real bodies).
    marks = body.translate(None, _NOT_STRUCTURAL)
    colons = marks.count(b":")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _SLOW
    # Limits without a walk: every value starts at a byte of its own (so no more values than
    # bytes), and a value nests in at most one container per ``{``/``[`` byte.
    if len(marks) - colons + 1 > MAX_DEPTH and _walk(doc) is None:
        return _SLOW
    # SECURITY: a mismatch may be a duplicate key: the strict parser decides (and refuses it).
    try:
        tree_colons = orjson.dumps(doc).count(b":")
    except orjson.JSONEncodeError:  # not expected for orjson's own output; be strict anyway
        return _SLOW
    if tree_colons != colons:
        return _SLOW
    return doc


def _walked_json(body: bytes) -> Any:
    """``_fast_json`` for large bodies: one walk checks the limits and counts the tree's colons
    (cheaper there than re-serialising a large document)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _SLOW
    # SECURITY: a mismatch may be a duplicate key: the strict parser decides (and refuses it).
    if _walk(doc) != body.count(b":"):
        return _SLOW
    return doc


def _walk(doc: Any) -> int | None:
    """The colons ``doc`` written as JSON holds (one per member, plus those inside keys and
    strings), or ``None`` when it breaks ``MAX_DEPTH`` or ``MAX_NODES`` (``check_shape``)."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    nodes = 0
    colons = 0
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES or depth > MAX_DEPTH:
            return None
        kind = type(node)
        if kind is dict:
            colons += len(node)
            for k, v in node.items():
                if ":" in k:
                    colons += k.count(":")
                stack.append((v, depth + 1))
        elif kind is list:
            stack.extend((v, depth + 1) for v in node)
        elif kind is str and ":" in node:
            colons += node.count(":")
    return colons


_SLOW: Any = object()


def load_json(body: bytes) -> Any:
    """Parse a JSON body strictly; every failure is a ``BadRequest``."""
    _check_size(body)
    doc = _fast_json(body)
    if doc is not _SLOW:
        return doc
    text = _decode(body, "bad-json")
    try:
        doc = json.loads(text, object_pairs_hook=_pairs_hook, parse_constant=_refuse_constant)
    except BadRequest:
        raise
    except RecursionError:
        raise BadRequest("body-too-deep", f"nesting deeper than {MAX_DEPTH}") from None
    except ValueError as exc:  # JSONDecodeError is a ValueError
        raise BadRequest("bad-json", str(exc)[:200]) from None
    check_shape(doc)
    return doc


_YamlBase: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _BodyLoader(_YamlBase):  # type: ignore[misc]
    """Safe YAML loader for request bodies: counts alias uses, refuses duplicate keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._alias_uses = 0

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        if node in self.constructed_objects:
            # A node constructed before is reached again: that is an alias use.
            self._alias_uses += 1
            if self._alias_uses > MAX_ALIASES:
                raise BadRequest("yaml-too-many-aliases", f"more than {MAX_ALIASES} aliases")
        return super().construct_object(node, deep=deep)


def _yaml_mapping(loader: _BodyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    result: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str | int | float | bool) and key is not None:
            raise BadRequest("bad-yaml", "mapping keys must be scalars")
        if key in result:
            raise BadRequest("duplicate-key", f"duplicate YAML key {sanitize(str(key))!r}")
        result[key] = loader.construct_object(value_node, deep=True)
    return result


_BodyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _yaml_mapping)


def load_yaml(body: bytes) -> Any:
    """Parse a single-document YAML body with the safe loader; failures are ``BadRequest``."""
    _check_size(body)
    text = _decode(body, "bad-yaml")
    loader = _BodyLoader(text)
    try:
        doc = loader.get_single_data()
    except BadRequest:
        raise
    except RecursionError:
        raise BadRequest("body-too-deep", f"nesting deeper than {MAX_DEPTH}") from None
    except yaml.YAMLError as exc:
        raise BadRequest("bad-yaml", str(exc).splitlines()[0][:200]) from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. bad timestamps, unhashable keys
        raise BadRequest("bad-yaml", str(exc)[:200]) from None
    finally:
        loader.dispose()
    check_shape(doc)
    return doc


_YAML_TYPES = ("yaml", "x-yaml")


def load_body(body: bytes, content_type: str | None) -> Any:
    """JSON or YAML by ``Content-Type``; without a telling type, JSON if it looks like JSON."""
    ctype = (content_type or "").split(";", 1)[0].strip().lower()
    if ctype.endswith(_YAML_TYPES) or ctype.endswith(("+yaml", "/yaml")):
        return load_yaml(body)
    if ctype.endswith(("json", "+json")):
        return load_json(body)
    head = body.lstrip()[:1]
    if head in (b"{", b"["):
        return load_json(body)
    return load_yaml(body)


def check_shape(doc: Any) -> None:
    """Refuse documents nested deeper than ``MAX_DEPTH`` or with more than ``MAX_NODES`` nodes."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    nodes = 0
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise BadRequest("body-too-large", f"more than {MAX_NODES} values", status=413)
        if depth > MAX_DEPTH:
            raise BadRequest("body-too-deep", f"nesting deeper than {MAX_DEPTH}")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
