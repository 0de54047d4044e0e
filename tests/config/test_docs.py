"""docs/configuration.md names every config key the loader accepts (keeps the README true)."""

from __future__ import annotations

import dataclasses
import typing

from gatekeeper import config
from tests.support import repo_root


def _keys(cls: type, prefix: str = "") -> list[str]:
    out: list[str] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in ("source", "base_dir"):
            continue
        tp = hints[f.name]
        key = prefix + f.name
        nested = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        if dataclasses.is_dataclass(tp):
            nested = [tp]  # type: ignore[list-item]
        if not nested:
            out.append(key)
        for sub in nested:
            sep = "[]." if typing.get_origin(tp) is tuple else "."
            out.extend(_keys(sub, key + sep))  # type: ignore[arg-type]
    return out


def test_every_key_is_documented() -> None:
    doc = (repo_root() / "docs" / "configuration.md").read_text()
    missing = [k for k in _keys(config.Config) if f"`{k}`" not in doc]
    assert not missing, f"undocumented config keys: {missing}"
