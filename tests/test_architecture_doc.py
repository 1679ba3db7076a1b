"""docs/architecture.md shows the state machines exactly as the stores enforce them."""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum

import pytest

from shared.broadcasts.store import BROADCAST_TRANSITIONS
from shared.messages.store import MESSAGE_TRANSITIONS
from tests.conftest import REPOSITORY_ROOT


def transitions_markdown(transitions: Iterable[tuple[Enum, Enum, Enum]]) -> str:
    """One row per (event, to-state) with every from-state that leads there, in the table's order."""
    sources_by_move: dict[tuple[str, str], list[str]] = {}
    for source, event, target in transitions:
        sources_by_move.setdefault((str(event.value), str(target.value)), []).append(str(source.value))
    rows = [f"| `{event}` | {', '.join(sources)} | {target} |" for (event, target), sources in sources_by_move.items()]
    return "\n".join(["| event | from | to |", "| --- | --- | --- |", *rows])


@pytest.mark.parametrize(
    ("marker", "transitions"),
    [("message-transitions", MESSAGE_TRANSITIONS), ("broadcast-transitions", BROADCAST_TRANSITIONS)],
)
def test_the_documented_table_is_the_code_table(marker: str, transitions: tuple[tuple[Enum, Enum, Enum], ...]) -> None:
    document = (REPOSITORY_ROOT / "docs" / "architecture.md").read_text()
    documented = document.split(f"<!-- {marker}:start -->\n", 1)[1].split(f"\n<!-- {marker}:end -->", 1)[0]
    expected = transitions_markdown(transitions)
    assert documented == expected, f"docs/architecture.md's {marker} table is out of date; it should be:\n{expected}"
