"""The server's heap settling (gatekeeper/heap.py): frozen at start, thawed on reload, settled
again later; a cycle left by an old snapshot is collected once it is thawed."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from gatekeeper import heap


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


@pytest.fixture(autouse=True)
def thaw() -> Iterator[None]:
    yield
    gc.unfreeze()  # never leave the test process frozen


async def test_settle_freeze_thaw_and_resettle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "RESETTLE_AFTER_S", 0.05)
    keeper = heap.HeapKeeper(asyncio.get_running_loop())
    old = Node()
    ref = weakref.ref(old)
    keeper.started()
    assert gc.get_freeze_count() > 0
    del old
    gc.collect()
    assert ref() is not None  # a frozen cycle is out of the collector's reach
    keeper.reloaded()
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert ref() is None  # thawed: the old cycle is collected
    await asyncio.sleep(0.2)
    assert gc.get_freeze_count() > 0  # settled again after the delay
    keeper.close()


async def test_a_second_reload_restarts_the_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "RESETTLE_AFTER_S", 60.0)
    keeper = heap.HeapKeeper(asyncio.get_running_loop())
    keeper.started()
    keeper.reloaded()
    first = keeper._pending
    keeper.reloaded()
    second = keeper._pending
    assert first is not None and first.cancelled()
    assert second is not None and not second.cancelled() and second is not first
    assert second.when() >= first.when()
    keeper.close()
    assert second.cancelled() and gc.get_freeze_count() == 0
