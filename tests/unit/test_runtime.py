"""Every long-lived process sets its garbage collector up as the portal does."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from adapters.runtime import YOUNG_COLLECTION_THRESHOLD
from vigil.cli import _serve


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_collector")
def test_a_background_process_sets_aside_what_it_holds_before_it_runs() -> None:
    # The relay, the consumers and the workers had Python's defaults: each full
    # collection walked every module and compiled ruleset again, and the youngest
    # generation was collected many times within one scoring job.
    seen: dict[str, object] = {}

    async def main() -> None:
        seen["frozen"] = gc.get_freeze_count()
        seen["young"] = gc.get_threshold()[0]

    gc.unfreeze()
    _serve(main())

    assert seen["young"] == YOUNG_COLLECTION_THRESHOLD
    assert isinstance(seen["frozen"], int)
    assert seen["frozen"] > 0
