"""The object after a change: patches applied to the stored object, pure functions.

- JSON merge patch (RFC 7386, ``application/merge-patch+json``): maps merge, ``null`` deletes,
  anything else replaces (lists too);
- JSON patch (RFC 6902, ``application/json-patch+json``): ``add``, ``remove``, ``replace``,
  ``move``, ``copy``, ``test`` on JSON pointers;
- strategic merge patch (``application/strategic-merge-patch+json``) and server-side apply
  (``application/apply-patch+yaml``): a merge patch whose lists of named things (containers,
  init and ephemeral containers, volumes, env, resource claims, ...) merge element by element
  on their key, with the directives ``$patch: replace|delete|merge``, ``$retainKeys``,
  ``$deleteFromPrimitiveList/<field>`` and ``$setElementOrder/<field>``. Apply's removal of
  fields its manager no longer sets is not modelled: the result keeps them (more, never less).

Whatever cannot be applied exactly is refused (``unmeasurable-request``); a failing ``test``
operation or a bad pointer is a ``bad-patch`` (the API server would refuse the patch too).
"""

from __future__ import annotations

import copy
from typing import Any

from ...errors import BadRequest
from ..body import sanitize
from ..common import as_mapping
from .pods import unmeasurable

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY = (
    "application/apply-patch+yaml",
    "application/apply-patch+json",
    "application/apply-patch+cbor",
)

# Lists merged by key in a strategic merge patch (field name -> key), as the API types declare.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "env": "name",
    "resourceClaims": "name",
    "claims": "name",
    "ports": "containerPort",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "tolerations": "key",
}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _directive_keys(patch: dict[Any, Any]) -> None:
    for key in patch:
        if isinstance(key, str) and key.startswith("$") and key != "$patch":
            known = ("$retainKeys", "$deleteFromPrimitiveList/", "$setElementOrder/")
            if not key.startswith(known):
                raise unmeasurable(key, "unknown strategic-merge directive")


def strategic_merge(target: Any, patch: Any, field: str = "") -> Any:
    """A strategic merge patch applied to ``target`` (see the module docstring)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    _directive_keys(patch)
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    body = {k: v for k, v in patch.items() if k != "$patch"}
    if directive == "replace":
        return _strip(body)
    if directive not in (None, "merge"):
        raise unmeasurable(f"{field}.$patch", f"unknown directive {sanitize(str(directive))!r}")
    result = dict(target) if isinstance(target, dict) else {}
    retain = body.pop("$retainKeys", None)
    for key, value in body.items():
        if not isinstance(key, str) or key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = _merge_list(result.get(key), value, key)
        else:
            merged = strategic_merge(result.get(key), value, key)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
    for key, value in body.items():
        if isinstance(key, str) and key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            drop = value if isinstance(value, list) else []
            if isinstance(result.get(name), list):
                result[name] = [v for v in result[name] if v not in drop]
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain or k not in body}
    return result


def _strip(value: Any) -> Any:
    """A replaced value keeps no directives."""
    if isinstance(value, dict):
        return {
            k: _strip(v) for k, v in value.items() if not (isinstance(k, str) and k.startswith("$"))
        }
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _merge_list(current: Any, patch: list[Any], field: str) -> list[Any]:
    key = MERGE_KEYS.get(field)
    if any(isinstance(v, dict) and v.get("$patch") == "replace" for v in patch):
        return [_strip(v) for v in patch if not (isinstance(v, dict) and "$patch" in v)]
    if key is None or not all(isinstance(v, dict) for v in patch):
        if any(isinstance(v, dict) and "$patch" in v for v in patch):
            raise unmeasurable(field, "patch directive in a list that is replaced whole")
        return _strip(patch)  # type: ignore[no-any-return]
    result = [copy.deepcopy(v) for v in current] if isinstance(current, list) else []
    for item in patch:
        name = item.get(key)
        if name is None:
            raise unmeasurable(f"{field}[]", f"a merged element needs its {key!r}")
        at = next(
            (i for i, v in enumerate(result) if isinstance(v, dict) and v.get(key) == name), None
        )
        if item.get("$patch") == "delete":
            if at is not None:
                del result[at]
            continue
        if at is None:
            result.append(strategic_merge({}, item, field))
        else:
            result[at] = strategic_merge(result[at], item, field)
    return result


# ----------------------------------------------------------------------------- RFC 6902


def _tokens(pointer: Any, what: str) -> list[str]:
    if not isinstance(pointer, str) or (pointer and not pointer.startswith("/")):
        raise BadRequest("bad-patch", f"{what}: bad JSON pointer")
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer.split("/")[1:]]


def _parent(doc: Any, tokens: list[str], what: str) -> tuple[Any, str]:
    node = doc
    for tok in tokens[:-1]:
        if isinstance(node, dict) and tok in node:
            node = node[tok]
        elif isinstance(node, list) and tok.isdigit() and int(tok) < len(node):
            node = node[int(tok)]
        else:
            raise BadRequest("bad-patch", f"{what}: path does not exist")
    return node, tokens[-1]


def _get(doc: Any, tokens: list[str], what: str) -> Any:
    if not tokens:
        return doc
    parent, last = _parent(doc, tokens, what)
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent[int(last)]
    raise BadRequest("bad-patch", f"{what}: path does not exist")


def _remove(doc: Any, tokens: list[str], what: str) -> Any:
    value = _get(doc, tokens, what)
    parent, last = _parent(doc, tokens, what)
    if isinstance(parent, dict):
        del parent[last]
    else:
        del parent[int(last)]
    return value


def _add(doc: Any, tokens: list[str], value: Any, what: str, replace: bool) -> Any:
    if not tokens:
        return copy.deepcopy(value)
    parent, last = _parent(doc, tokens, what)
    if isinstance(parent, dict):
        if replace and last not in parent:
            raise BadRequest("bad-patch", f"{what}: path does not exist")
        parent[last] = copy.deepcopy(value)
    elif isinstance(parent, list):
        if last == "-" and not replace:
            parent.append(copy.deepcopy(value))
        elif last.isdigit() and int(last) <= len(parent) - (1 if replace else 0):
            if replace:
                parent[int(last)] = copy.deepcopy(value)
            else:
                parent.insert(int(last), copy.deepcopy(value))
        else:
            raise BadRequest("bad-patch", f"{what}: bad list index")
    else:
        raise BadRequest("bad-patch", f"{what}: path does not exist")
    return doc


def json_patch(target: Any, ops: Any) -> Any:
    """RFC 6902 applied to a copy of ``target``."""
    if not isinstance(ops, list):
        raise BadRequest("bad-patch", "a JSON patch is a list of operations")
    doc = copy.deepcopy(target)
    for i, raw in enumerate(ops):
        what = f"patch[{i}]"
        op = as_mapping(raw, what)
        kind = op.get("op")
        tokens = _tokens(op.get("path"), what)
        if kind in ("add", "replace", "test") and "value" not in op:
            raise BadRequest("bad-patch", f"{what}: value missing")
        if kind == "add":
            doc = _add(doc, tokens, op["value"], what, replace=False)
        elif kind == "replace":
            doc = _add(doc, tokens, op["value"], what, replace=True)
        elif kind == "remove":
            _remove(doc, tokens, what)
        elif kind == "test":
            if _get(doc, tokens, what) != op["value"]:
                raise BadRequest("bad-patch", f"{what}: test failed")
        elif kind in ("move", "copy"):
            source = _tokens(op.get("from"), f"{what}.from")
            value = _remove(doc, source, what) if kind == "move" else _get(doc, source, what)
            doc = _add(doc, tokens, value, what, replace=False)
        else:
            raise BadRequest("bad-patch", f"{what}: unknown op {sanitize(str(kind))!r}")
    return doc


def apply_patch(current: dict[Any, Any], patch: Any, content_type: str) -> Any:
    """``current`` after a PATCH of ``content_type`` (unknown types are refused)."""
    if content_type == JSON_PATCH:
        return json_patch(current, patch)
    if content_type == MERGE:
        return merge_patch(current, patch)
    if content_type == STRATEGIC or content_type in APPLY:
        return strategic_merge(current, patch)
    raise unmeasurable("Content-Type", f"unknown patch type {sanitize(content_type)!r}")


def metadata_only(patch: Any, content_type: str) -> bool:
    """True when a patch changes nothing but labels and annotations (no compute can follow)."""
    allowed = ("labels", "annotations")
    if content_type == JSON_PATCH:
        if not isinstance(patch, list):
            return False
        for op in patch:
            if not isinstance(op, dict):
                return False
            for key in ("path", "from"):
                if key in op and not str(op[key]).startswith(
                    ("/metadata/labels", "/metadata/annotations")
                ):
                    return False
        return True
    if not isinstance(patch, dict):
        return False
    if set(patch) - {"metadata", "apiVersion", "kind"}:
        return False
    meta = patch.get("metadata")
    return meta is None or (
        isinstance(meta, dict) and not set(meta) - {*allowed, "name", "namespace"}
    )


__all__ = [
    "APPLY",
    "JSON_PATCH",
    "MERGE",
    "MERGE_KEYS",
    "STRATEGIC",
    "apply_patch",
    "json_patch",
    "merge_patch",
    "metadata_only",
    "strategic_merge",
]
