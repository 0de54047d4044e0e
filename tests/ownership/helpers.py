"""Shared helpers for the ownership tests: write sources to a temp dir and load a registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import yaml

from gatekeeper.config import EntitiesConfig, EntitySource
from gatekeeper.ownership import Registry, load_registry


def write_native(path: Path, entities: list[dict[str, Any]]) -> str:
    path.write_text(yaml.safe_dump({"entities": entities}, sort_keys=False))
    return str(path)


def write_ftm(path: Path, records: list[dict[str, Any]]) -> str:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return str(path)


def company(id: str, **props: Any) -> dict[str, Any]:
    return {"id": id, "schema": "Company", "properties": {"name": [id], **props}}


def owns(id: str, owner: str, asset: str, pct: str | None = None) -> dict[str, Any]:
    props: dict[str, Any] = {"owner": [owner], "asset": [asset]}
    if pct is not None:
        props["percentage"] = [pct]
    return {"id": id, "schema": "Ownership", "properties": props}


def registry(*sources: tuple[str, str], **kw: Any) -> Registry:
    cfg = EntitiesConfig(sources=tuple(EntitySource(path=p, format=f) for p, f in sources), **kw)
    return load_registry(cfg)


def native(tmp_path: Path, entities: list[dict[str, Any]], **kw: Any) -> Registry:
    return registry((write_native(tmp_path / "entities.yaml", entities), "native"), **kw)


def ent(id: str, *owners: tuple[str, float] | dict[str, Any], **kw: Any) -> dict[str, Any]:
    """A native entity; owners as (id, share) pairs or full owner mappings."""
    out: dict[str, Any] = {"id": id, **kw}
    if owners:
        out["owners"] = [o if isinstance(o, dict) else {"id": o[0], "share": o[1]} for o in owners]
    return out


def write_csv(path: Path, rows: list[list[str]]) -> str:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    return str(path)
