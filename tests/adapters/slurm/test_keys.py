"""How each version's plugin reads job keys: v0.0.37/38 lower ASCII keys (so ``TASKS`` is
``tasks``) and nothing else; v0.0.39+ read keys exactly."""

from __future__ import annotations

import json

import pytest

from gatekeeper.adapters import measure
from gatekeeper.errors import BadRequest

from ..helpers import CATALOG
from .cases import ENV, INVENTORY, ROUTES, V37, V38, V41


def measured(path: str, job: dict[str, object]) -> object:
    body = json.dumps({"job": {**ENV, "partition": "gpu", **job}}).encode()
    return measure(ROUTES["plain"], "POST", path, {}, body, CATALOG, INVENTORY)


@pytest.mark.parametrize("path", [V37, V38])
def test_a_non_ascii_key_names_no_field_in_the_case_blind_versions(path: str) -> None:
    # KELVIN SIGN lowers to an ASCII "k" in Unicode; Slurm lowers ASCII bytes only
    with pytest.raises(BadRequest) as refused:
        measured(path, {"tas\u212as": 64})
    assert refused.value.reason == "unmeasurable-request"
    assert "job.tas\u212as: not a job field of" in str(refused.value)


@pytest.mark.parametrize("path", [V37, V38])
def test_ascii_keys_are_read_without_regard_to_case(path: str) -> None:
    assert measured(path, {"TASKS": 4, "Gpus_Per_Task": 2}) == measured(
        path, {"tasks": 4, "gpus_per_task": 2}
    )


def test_keys_are_exact_from_v0_0_39() -> None:
    with pytest.raises(BadRequest, match=r"job\.TASKS: not a job field of v0\.0\.41"):
        measured(V41, {"TASKS": 4})
