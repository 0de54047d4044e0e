"""The Slurm adapter's job memo changes no answer.

A job's bound is remembered by the site, the version, the job's path, the fields that can grant
something and the blocks of directives read over it. Whatever was measured before, a request
measured with the memo filled gets exactly what it gets with the memo empty -- refusals included
-- and a request is never answered from another site's (route's, catalog's, inventory's) entry.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatekeeper.adapters import measure
from gatekeeper.adapters import slurm as adapter
from gatekeeper.config import InventoryAccelerators, InventoryEntry, InventoryNode, RouteConfig
from gatekeeper.errors import BadRequest
from gatekeeper.inventory import Inventory, build_inventory

from ..helpers import CATALOG
from .cases import CASES, ENTRIES, ENV, INVENTORY, ROUTES, SH, V37, V41

SCRIPT_LINES = [
    "#SBATCH --gres=gpu:h100:8",
    "#SBATCH -N 4",
    "#SBATCH --exclusive",
    "#SBATCH -p a100",
    "#SBATCH hetjob",
    "#SBATCH --time=1-00:00:00",
    "#SBATCH --nope",
    "srun train --seed 1",
    "srun train --seed 2",
]
SCRIPTS = st.lists(st.sampled_from(SCRIPT_LINES), max_size=4).map(
    lambda lines: SH + "\n".join(lines) + "\n"
)
# Few values, so that generated jobs often share their granting fields and differ elsewhere.
FIELDS = {
    "partition": st.sampled_from(["gpu", "a100"]),
    "tres_per_node": st.sampled_from(["gres/gpu:2", "gres/shard:3"]),
    "nodes": st.sampled_from(["2", "1-4"]),
    "exclusive": st.just("user"),
}
NEUTRAL = st.fixed_dictionaries(
    {}, optional={"name": st.sampled_from(["a", "b"]), "comment": st.sampled_from(["x", "y"])}
)
JOB = st.builds(
    lambda fields, neutral, script: {
        **ENV,
        **fields,
        **neutral,
        **({} if script is None else {"script": script}),
    },
    st.fixed_dictionaries({}, optional=FIELDS),
    NEUTRAL,
    st.none() | SCRIPTS,
)
BODY = st.one_of(
    st.builds(lambda j: {"job": j}, JOB),
    st.builds(lambda js: {"jobs": js}, st.lists(JOB, min_size=1, max_size=3)),
    st.builds(lambda j, s: {"job": j, "script": s}, JOB, SCRIPTS),
)
REQUEST = st.tuples(st.sampled_from(sorted(ROUTES)), st.sampled_from([V41, V37]), BODY)


@pytest.fixture(autouse=True)
def empty_memo() -> Iterator[None]:
    adapter._JOBS.clear()
    yield
    adapter._JOBS.clear()


def outcome(
    route: RouteConfig, path: str, body: Any, inventory: Inventory = INVENTORY
) -> tuple[Any, ...]:
    raw = json.dumps(body).encode()
    try:
        return ("ok", measure(route, "POST", path, {}, raw, CATALOG, inventory))
    except BadRequest as e:
        return ("refused", e.reason, str(e))


def fresh(route: RouteConfig, path: str, body: Any, inventory: Inventory = INVENTORY) -> Any:
    """The answer with nothing remembered (and nothing left behind)."""
    adapter._JOBS.clear()
    try:
        return outcome(route, path, body, inventory)
    finally:
        adapter._JOBS.clear()


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(REQUEST, min_size=1, max_size=4), REQUEST)
def test_whatever_came_before_a_request_gets_its_own_answer(
    before: list[tuple[str, str, Any]], request: tuple[str, str, Any]
) -> None:
    for name, path, body in before:
        outcome(ROUTES[name], path, body)
    name, path, body = request
    remembered = outcome(ROUTES[name], path, body)
    assert remembered == fresh(ROUTES[name], path, body)


def test_every_table_case_the_same_with_the_memo_filled() -> None:
    for case in CASES:  # all of them first, so each meets the entries of the others
        outcome(ROUTES[case[1]], case[2], case[3])
    for case in CASES:
        route, path, body = ROUTES[case[1]], case[2], case[3]
        assert outcome(route, path, body) == fresh(route, path, body), case[0]


def test_a_repeated_job_is_remembered_whatever_grants_nothing() -> None:
    route = ROUTES["plain"]
    job = {**ENV, "partition": "gpu", "tres_per_node": "gres/gpu:8", "nodes": "2"}
    first = outcome(route, V41, {"job": {**job, "name": "a", "script": SH + "srun a\n"}})
    assert len(adapter._JOBS) == 1
    again = outcome(route, V41, {"job": {**job, "name": "b", "script": SH + "srun b --x\n"}})
    assert len(adapter._JOBS) == 1  # the same entry answered
    assert again == first
    assert first[1].gpus == 16


def test_another_inventory_is_never_answered_from_the_old_one() -> None:
    body = {"job": {**ENV, "partition": "gpu", "exclusive": "user", "nodes": "2"}}
    before = outcome(ROUTES["plain"], V41, body)
    larger = (
        InventoryEntry(
            name="h100",
            scheduler="slurm",
            nodes=16,
            node=InventoryNode(InventoryAccelerators("H100-SXM", 16)),
            partitions=("gpu", "h100"),
        ),
        *ENTRIES[1:],
    )
    reloaded = build_inventory(larger, CATALOG)
    after = outcome(ROUTES["plain"], V41, body, reloaded)
    assert (before[1].gpus, after[1].gpus) == (16, 32)
    assert after == fresh(ROUTES["plain"], V41, body, reloaded)


def test_large_or_unwritable_keys_are_not_remembered() -> None:
    route = ROUTES["plain"]
    hosts = ",".join(f"n{i}" for i in range(2000))  # a granting field over the key limit
    long = {"job": {**ENV, "partition": "gpu", "required_nodes": hosts}}
    assert outcome(route, V41, long) == fresh(route, V41, long)
    outcome(route, V41, long)
    assert not adapter._JOBS
    huge = {"job": {**ENV, "partition": "gpu", "tasks": 2**70}}  # orjson cannot write it
    assert outcome(route, V41, huge) == fresh(route, V41, huge)
    assert not adapter._JOBS


def test_the_memo_stays_bounded() -> None:
    route = ROUTES["plain"]
    for n in range(adapter._JOBS_MAX + 10):
        outcome(route, V41, {"job": {**ENV, "partition": "gpu", "tasks": n + 1}})
        assert len(adapter._JOBS) <= adapter._JOBS_MAX


def test_blocks_too_long_to_remember_are_read_every_time() -> None:
    route = ROUTES["plain"]
    padding = "#" * 80 + "\n"
    long_block = SH + padding * 60  # longer than the block memo's text limit
    bodies = [
        {"job": {**ENV, "partition": "gpu", "script": long_block + f"#SBATCH -G {gpus}\n"}}
        for gpus in (2, 8)
    ]
    answers = [outcome(route, V41, body) for body in bodies]  # one after the other
    assert not adapter._JOBS
    assert [a[1].gpus for a in answers] == [2, 8]


def test_an_entry_held_for_other_objects_is_not_used() -> None:
    # ids are reused once an object is gone: an entry counts only for the very objects it holds
    route = ROUTES["plain"]
    body = {"job": {**ENV, "partition": "gpu", "tres_per_node": "gres/gpu:2", "nodes": "2"}}
    right = outcome(route, V41, body)
    [(key, (_, part))] = adapter._JOBS.items()
    impostor = RouteConfig(name="other", upstream="http://127.0.0.1:1", adapter="slurm")
    adapter._JOBS[key] = ((impostor, CATALOG, INVENTORY), part._replace(gpus=0.0))
    assert outcome(route, V41, body) == right


def test_other_values_the_same_values_in_other_fields_and_updates_are_measured_again() -> None:
    # the memo key holds the granting values, the fields they came from and the endpoint
    route = ROUTES["plain"]
    per_node = {**ENV, "partition": "gpu", "tres_per_node": "gres/gpu:2", "nodes": "2"}
    per_job = {**ENV, "partition": "gpu", "tres_per_job": "gres/gpu:2", "nodes": "2"}
    update = V41.replace("job/submit", "job/17")
    requests = [
        (V41, {"job": per_node}),
        (V41, {"job": {**per_node, "tres_per_node": "gres/gpu:4"}}),
        (V41, {"job": per_job}),
        (update, per_node),
    ]
    answers = [outcome(route, path, body) for path, body in requests]
    assert [a[1].gpus for a in answers[:3]] == [4, 8, 2]
    assert answers[3][1].assumptions != answers[0][1].assumptions
    for (path, body), answer in zip(requests, answers, strict=True):
        assert answer == fresh(route, path, body)


def test_a_job_another_version_measured_is_read_with_its_own_version_table() -> None:
    # ``required_nodes`` is a host list from v0.0.39, a field v0.0.37 refuses
    route = ROUTES["plain"]
    body = {"job": {**ENV, "partition": "gpu", "required_nodes": "n[1-2]"}}
    answers = [outcome(route, path, body) for path in (V41, V37)]
    assert answers[0][0] == "ok" and answers[1][:2] == ("refused", "unmeasurable-request")
    assert answers[1] == fresh(route, V37, body)
