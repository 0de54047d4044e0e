"""Safe YAML loading that remembers where every value came from.

Config, policy and native entity files are read with ``load_located``: mappings become ``LocDict``
and sequences ``LocList``, each carrying the 1-based line of itself and of each of its keys/items,
so validators can report ``file:line: key.path: message``. Only the safe tag set is accepted,
documents are size-limited, and alias expansion is bounded (billion-laughs defence).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from .errors import ConfigError, Problem

MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_ALIASES = 1000
MAX_EXPANDED_NODES = 2_000_000  # nodes after alias expansion: what a consumer walking it would see


class LocDict(dict[str, Any]):
    """A dict that knows its own line and the line of each key."""

    line: int
    key_lines: dict[str, int]

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class LocList(list[Any]):
    """A list that knows its own line and the line of each item."""

    line: int
    item_lines: list[int]

    def line_of(self, index: int) -> int:
        return self.item_lines[index] if index < len(self.item_lines) else self.line


def line_of(node: Any, key: str | int | None = None, default: int | None = None) -> int | None:
    """Best-effort line of ``node`` (or of its ``key``), for error messages."""
    if isinstance(node, LocDict):
        return node.line_of(key) if isinstance(key, str) else node.line
    if isinstance(node, LocList):
        return node.line_of(key) if isinstance(key, int) else node.line
    return default


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core-schema scalars, building LocDict/LocList, counting aliases.

    PyYAML resolves YAML 1.1: ``yes/no/on/off`` become booleans and a float exponent needs a
    sign. Country codes (``NO`` is Norway) and licence budgets (``5.0e7``) trip over both, so
    booleans are only ``true``/``false`` and ``5.0e7`` is a float here.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                event = self.peek_event()  # type: ignore[no-untyped-call]
                raise yaml.constructor.ConstructorError(
                    None, None, f"more than {MAX_ALIASES} aliases", event.start_mark
                )
        return super().compose_node(parent, index)


def _expanded_size(root: yaml.Node) -> int:
    """Node count with aliases expanded, memoised per node so a YAML bomb costs O(document)."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if key in sizes:
            continue
        if isinstance(node, yaml.ScalarNode):
            sizes[key] = 1
            continue
        children = (
            [c for pair in node.value for c in pair]
            if isinstance(node, yaml.MappingNode)
            else list(node.value)
        )
        if done:
            sizes[key] = 1 + sum(sizes.get(id(c), 1) for c in children)
            continue
        stack.append((node, True))
        # A child already on the path would be a recursive alias; PyYAML's composer rejects
        # those, so every child here resolves to a finished size.
        stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LocDict:
    loader.flatten_mapping(node)
    result = LocDict()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str | int | float | bool) and key is not None:
            raise yaml.constructor.ConstructorError(
                None, None, "mapping keys must be scalars", key_node.start_mark
            )
        skey = key if isinstance(key, str) else str(key)
        if skey in result:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {skey!r}", key_node.start_mark
            )
        result[skey] = loader.construct_object(value_node, deep=True)
        result.key_lines[skey] = key_node.start_mark.line + 1
    return result


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> LocList:
    result = LocList(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
    return result


_Loader.yaml_implicit_resolvers = {
    key: [
        (tag, rx)
        for tag, rx in resolvers
        if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:float")
    ]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def parse_located(text: str, filename: str) -> Any:
    """Parse one YAML document from ``text``; errors become a located ``ConfigError``."""
    if len(text) > MAX_FILE_BYTES:
        raise ConfigError([Problem(filename, None, "", f"file larger than {MAX_FILE_BYTES} bytes")])
    try:
        loader = _Loader(text)
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(filename, None, "", f"invalid YAML: {exc}")]) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node) > MAX_EXPANDED_NODES:
            raise ConfigError(
                [
                    Problem(
                        filename, None, "", f"YAML expands to more than {MAX_EXPANDED_NODES} nodes"
                    )
                ]
            )
        return loader.construct_document(node)
    except RecursionError:
        raise ConfigError(
            [Problem(filename, None, "", "invalid YAML: nested too deeply")]
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        msg = exc.problem or str(exc)
        if exc.context:
            msg = f"{exc.context}: {msg}"
        raise ConfigError([Problem(filename, line, "", f"invalid YAML: {msg}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(filename, None, "", f"invalid YAML: {exc}")]) from None
    finally:
        loader.dispose()


def load_located(path: str) -> Any:
    """Read and parse ``path``; unreadable files become a ``ConfigError`` naming the file."""
    return read_located(path)[1]


def read_located(path: str) -> tuple[bytes, Any]:
    """The bytes of ``path`` and their parse (for callers that also digest the file)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError([Problem(path, None, "", f"cannot read: {exc.strerror}")]) from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError([Problem(path, None, "", f"file larger than {MAX_FILE_BYTES} bytes")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem(path, None, "", f"not UTF-8: {exc.reason}")]) from None
    return raw, parse_located(text, path)
