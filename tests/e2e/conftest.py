"""End-to-end helpers: deterministic scripted answers (so a result through the
proxy can be compared exactly with the same result straight from the upstream)
and small readers of what the proxy recorded."""

from __future__ import annotations

import itertools
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import proxy.scripted_wire as scripted


class DeterministicIds:
    """Makes the scripted model's ids and timestamps a pure function of how many
    ids it handed out since the last :meth:`reset`."""

    def __init__(self) -> None:
        self._counter = itertools.count()

    def reset(self) -> None:
        self._counter = itertools.count()

    def make(self, prefix: str) -> str:
        return f"{prefix}{next(self._counter):024d}"


@pytest.fixture
def same_ids(monkeypatch: pytest.MonkeyPatch) -> Iterator[DeterministicIds]:
    ids = DeterministicIds()
    monkeypatch.setattr(scripted, "_id", ids.make)
    monkeypatch.setattr(scripted, "time", types.SimpleNamespace(time=lambda: 1_700_000_000.0))
    yield ids


def twice(ids: DeterministicIds, run: Callable[[str], Any], direct_url: str, proxy_url: str) -> tuple[Any, Any]:
    """``run`` against the upstream directly, then (ids reset) through the proxy."""
    ids.reset()
    direct = run(direct_url)
    ids.reset()
    through = run(proxy_url)
    return direct, through


def events_of(proxy: Any, session_id: str) -> list[Any]:
    return proxy.call_store(lambda s: s.get_events(session_id))


def calls_of(proxy: Any, session_id: str) -> list[Any]:
    return proxy.call_store(lambda s: s.get_calls(session_id))


def sessions_of(proxy: Any) -> list[Any]:
    return proxy.call_store(lambda s: s.list_sessions(limit=1000))


def shape(events: list[Any]) -> list[tuple[str, Any]]:
    """Events as (kind, what) pairs: text, tool name + arguments, or tool result text."""
    out: list[tuple[str, Any]] = []
    for ev in events:
        kind = ev.kind.value
        if kind == "tool_call":
            out.append((kind, (ev.tool_name, ev.arguments)))
        elif kind == "tool_result":
            out.append((kind, (ev.tool_name, ev.text)))
        else:
            out.append((kind, ev.text))
    return out
