"""A pytest plugin for tests/test_fast_items.py (`-p tests.item_counter`): prints how many items went
through pytest's own setup phase, and with CROSSNET_TEST_MARKS=1 marks the first collected cell
`skip` and the second `xfail`, as a user's conftest might; after collection it prints how many
items' `location` (which crossnet fills in for the cells) differs from pytest's own."""

from __future__ import annotations

import os

import pytest

SETUPS: list[str] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.environ.get("CROSSNET_TEST_MARKS") == "1" and len(items) > 1:
        items[0].add_marker(pytest.mark.skip(reason="skipped by the user's conftest"))
        items[1].add_marker(pytest.mark.xfail(reason="marked xfail by the user's conftest"))


def pytest_collection_finish(session: pytest.Session) -> None:
    filled = [item for item in session.items if "location" in item.__dict__]
    differ = 0
    for item in filled:
        ours = item.__dict__.pop("location")
        differ += ours != item.location  # pytest's own, computed anew
    print(f"item-counter: {len(filled)} locations filled, {differ} differ from pytest's")


def pytest_runtest_setup(item: pytest.Item) -> None:
    SETUPS.append(item.nodeid)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    terminalreporter.write_line(f"item-counter: {len(SETUPS)} items through pytest's setup phase")
