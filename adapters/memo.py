"""Decoded messages remembered by their bytes.

Agents re-send their whole history on every call, so all but the last few
messages of a request were decoded (and hashed) on an earlier call. The memo
maps a digest of a message's JSON bytes, plus whatever context its events
depend on (the tool name a result inherits from its call), to the events
decoded from it the first time. Serialising and digesting a message costs a
fraction of decoding it; the cached events are frozen and carry their hashes,
so a hit skips both. Keys are 16-byte digests, not the bytes themselves: orjson
hands back every serialised value in a buffer of at least 4 KB.

Only messages that decoded cleanly are remembered: a message that fails
validation is decoded again (and fails again with its own path) every time.
And only messages seen a second time: the first sighting keeps just the
digest, so a message sent once (a session's only call, a fresh request) costs
a few dozen bytes, not its events. An agent's history message is decoded on
its first two calls and found in the memo on every later one.
Bounded by entries and by size (each entry counts its message's serialised
bytes, which covers texts and tool arguments alike, plus a fixed overhead per
event), least recently used first. A message larger than a sixteenth of the
bound is not remembered: it would push out many others to save one decode.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Callable, Hashable, Sequence

import orjson

from adapters.model import EventKind, TrajectoryEvent

Key = tuple[bytes, Hashable]
_EVENT_OVERHEAD = 400  # bytes an event object takes besides its text, roughly


class MessageMemo:
    def __init__(self, max_entries: int = 50_000, max_bytes: int = 32 * 1024 * 1024) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: OrderedDict[Key, tuple[tuple[TrajectoryEvent, ...], int]] = OrderedDict()
        self._bytes = 0
        self._seen: set[Key] = set()  # digests seen once, not (yet) remembered; cleared when it reaches max_entries
        self.hits = self.misses = 0

    @staticmethod
    def key(message: object, context: Hashable = None) -> tuple[Key, int] | None:
        """The memo key of a message and its serialised size, or None when it cannot
        be serialised (then it is never cached)."""
        try:
            raw = orjson.dumps(message)
        except TypeError:
            return None
        return (hashlib.blake2b(raw, digest_size=16).digest(), context), len(raw)

    def get(self, key: Key | None) -> tuple[TrajectoryEvent, ...] | None:
        if key is None:
            return None
        item = self._items.get(key)
        if item is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return item[0]

    def put(self, key: Key | None, size: int, events: tuple[TrajectoryEvent, ...]) -> None:
        size += _EVENT_OVERHEAD * len(events)
        if key is None or key in self._items or size > self.max_bytes // 16:
            return
        if key not in self._seen:  # the first sighting: remember that it was seen, not what it holds
            if len(self._seen) >= self.max_entries:
                self._seen.clear()
            self._seen.add(key)
            return
        self._seen.discard(key)
        for ev in events:
            ev.hash  # computed once, here, and kept with the cached event
        self._items[key] = (events, size)
        self._bytes += size
        while self._items and (len(self._items) > self.max_entries or self._bytes > self.max_bytes):
            _, (_, old) = self._items.popitem(last=False)
            self._bytes -= old

    def __len__(self) -> int:
        return len(self._items)


def decode_with(
    memo: MessageMemo, message: object, context: Hashable, names: dict[str, str],
    decode: Callable[[], Sequence[TrajectoryEvent]],
) -> tuple[TrajectoryEvent, ...]:
    """The events of one message: remembered, or ``decode()``d (which validates the
    message and records the tool names its calls define in ``names``). A remembered
    message's calls define their names again here, as decoding would have."""
    keyed = memo.key(message, context)
    key, size = keyed if keyed is not None else (None, 0)
    known = memo.get(key)
    if known is None:
        known = tuple(decode())
        memo.put(key, size, known)
    else:  # as the adapters do: any call with an id and a name ("" included) names its results
        names.update((ev.tool_call_id, ev.tool_name) for ev in known
                     if ev.kind is EventKind.TOOL_CALL and ev.tool_call_id is not None and ev.tool_name is not None)
    return known
