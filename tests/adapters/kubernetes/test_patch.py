"""The object after a patch: RFC 7386, RFC 6902 and strategic merge, as pure functions."""

from __future__ import annotations

from typing import Any

import pytest

from gatekeeper.adapters.kubernetes.patch import (
    apply_patch,
    json_patch,
    merge_patch,
    metadata_only,
    strategic_merge,
)
from gatekeeper.errors import BadRequest

CURRENT: dict[str, Any] = {
    "metadata": {"name": "d", "labels": {"a": "1"}},
    "spec": {
        "replicas": 2,
        "template": {
            "spec": {
                "containers": [
                    {"name": "main", "image": "x", "resources": {"limits": {"nvidia.com/gpu": 1}}},
                    {"name": "log", "image": "y"},
                ]
            }
        },
    },
}


def test_rfc7386_examples() -> None:
    # RFC 7386 section 3's example
    target = {
        "title": "Goodbye!",
        "author": {"givenName": "John", "familyName": "Doe"},
        "tags": ["example", "sample"],
        "content": "This will be unchanged",
    }
    patch = {
        "title": "Hello!",
        "phoneNumber": "+01-123-456-7890",
        "author": {"familyName": None},
        "tags": ["example"],
    }
    assert merge_patch(target, patch) == {
        "title": "Hello!",
        "author": {"givenName": "John"},
        "tags": ["example"],
        "content": "This will be unchanged",
        "phoneNumber": "+01-123-456-7890",
    }


def test_rfc6902_operations() -> None:
    doc = {"foo": ["bar", "baz"], "x": {"y": 1}}
    ops = [
        {"op": "add", "path": "/foo/1", "value": "qux"},
        {"op": "test", "path": "/foo/0", "value": "bar"},
        {"op": "copy", "from": "/x", "path": "/z"},
        {"op": "move", "from": "/foo/0", "path": "/first"},
        {"op": "replace", "path": "/x/y", "value": 2},
        {"op": "remove", "path": "/foo/1"},
        {"op": "add", "path": "/foo/-", "value": "end"},
    ]
    assert json_patch(doc, ops) == {
        "foo": ["qux", "end"],
        "x": {"y": 2},
        "z": {"y": 1},
        "first": "bar",
    }
    assert doc == {"foo": ["bar", "baz"], "x": {"y": 1}}  # the input is not changed


@pytest.mark.parametrize(
    ("ops", "detail"),
    [
        ([{"op": "test", "path": "/a", "value": 2}], "patch[0]: test failed"),
        ([{"op": "replace", "path": "/nope", "value": 1}], "patch[0]: path does not exist"),
        ([{"op": "add", "path": "a", "value": 1}], "patch[0]: bad JSON pointer"),
        ([{"op": "frob", "path": "/a"}], "patch[0]: unknown op 'frob'"),
        ([{"op": "add", "path": "/a"}], "patch[0]: value missing"),
        ({"op": "add"}, "a JSON patch is a list of operations"),
    ],
)
def test_rfc6902_errors(ops: Any, detail: str) -> None:
    with pytest.raises(BadRequest) as e:
        json_patch({"a": 1}, ops)
    assert (e.value.reason, e.value.detail) == ("bad-patch", detail)


def test_strategic_merge_containers_by_name() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "main", "resources": {"limits": {"nvidia.com/gpu": 4}}},
                        {
                            "name": "new",
                            "image": "z",
                            "resources": {"limits": {"nvidia.com/gpu": 2}},
                        },
                    ]
                }
            }
        }
    }
    out = strategic_merge(CURRENT, patch)
    containers = out["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["main", "log", "new"]
    assert (
        containers[0]["image"] == "x"
        and containers[0]["resources"]["limits"]["nvidia.com/gpu"] == 4
    )


def test_strategic_merge_directives() -> None:
    delete = {"spec": {"template": {"spec": {"containers": [{"name": "log", "$patch": "delete"}]}}}}
    assert [
        c["name"]
        for c in strategic_merge(CURRENT, delete)["spec"]["template"]["spec"]["containers"]
    ] == ["main"]
    replace = {
        "spec": {
            "template": {
                "spec": {"containers": [{"name": "only", "image": "o"}, {"$patch": "replace"}]}
            }
        }
    }
    assert strategic_merge(CURRENT, replace)["spec"]["template"]["spec"]["containers"] == [
        {"name": "only", "image": "o"}
    ]
    whole = {"spec": {"$patch": "replace", "replicas": 9}}
    assert strategic_merge(CURRENT, whole)["spec"] == {"replicas": 9}
    with pytest.raises(BadRequest) as e:
        strategic_merge(CURRENT, {"spec": {"$frob": 1}})
    assert e.value.detail == "$frob: unknown strategic-merge directive"


def test_apply_patch_by_content_type() -> None:
    assert (
        apply_patch(CURRENT, {"spec": {"replicas": 5}}, "application/merge-patch+json")["spec"][
            "replicas"
        ]
        == 5
    )
    ops = [{"op": "replace", "path": "/spec/replicas", "value": 7}]
    assert apply_patch(CURRENT, ops, "application/json-patch+json")["spec"]["replicas"] == 7
    with pytest.raises(BadRequest) as e:
        apply_patch(CURRENT, {}, "text/plain")
    assert e.value.reason == "unmeasurable-request"


def test_metadata_only() -> None:
    assert metadata_only({"metadata": {"labels": {"a": "2"}}}, "application/merge-patch+json")
    assert not metadata_only({"spec": {"replicas": 3}}, "application/merge-patch+json")
    assert metadata_only(
        [{"op": "add", "path": "/metadata/annotations/x", "value": "1"}],
        "application/json-patch+json",
    )
    assert not metadata_only(
        [{"op": "copy", "from": "/spec", "path": "/metadata/labels"}], "application/json-patch+json"
    )
