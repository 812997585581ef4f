"""Requests that re-send an earlier request's history, read from where it ended.

An agent sends its whole history on every call: the next request's body is the
last one's, byte for byte, up to the end of its history list (Chat's and
Messages' ``messages``, Responses' ``input``), then the reply it got, the tool
results, and the rest of the body. Parsing and decoding that history again costs
time in proportion to the session's length (10,000 events: 1.6 MB of JSON,
tens of milliseconds). This cache keeps recent request bodies with what they
decoded to, and reads a new body that continues one of them from where that
one's list ended: only the new elements and the body's other fields are parsed.

A body B continues an earlier body A when, for the longest common prefix of the
two (its length ``d``), A's list closes right there (``A[d:]`` is ``]`` after
optional whitespace) while B's goes on (``B[d:]`` is ``,``). Nothing is taken on
trust from that pattern; three checks make the shortcut give exactly what
parsing all of B would:

* A's list elements are exactly ``A[open+1:d]``: that span parses on its own as
  a list of as many elements as A's list had (only the part not checked on an
  earlier hit is parsed again), and, for an A that was parsed whole, ``A`` with
  a marker element in place of that span parses with the marker, alone, as its
  list: no other key of that name, nor a string, holds the list A's events came
  from. Both must hold for the same ``d`` before either is kept as proven;
* B is parsed with A's elements replaced by the marker: the marker must come
  back as the first element of B's list, so the list at ``open`` is the one a
  parser of B reads, and its other elements are B's new ones. The marker is a
  string with a random part drawn when the cache is made, so no client can send
  a list that starts with it;
* B shares ``A[:d]`` byte for byte, so the parser is in the same state there.

Anything else (a rewritten history, different whitespace, NaN that only the
lenient reader takes) is a miss: the body is parsed whole, as without the cache.

Bounded by entries and by the bytes of the bodies kept plus their decoded events,
oldest first; an entry a hit continued is replaced by the new body's. Bodies are
grouped by their first bytes, at most ``_PER_KEY`` per group: past that many
sessions of one agent in flight at once (sharing a system prompt), the oldest
ones are parsed whole again. A new body is compared with every body of its
group: in full with those parsed whole (a few microseconds each, 0.04 ms for
16), and, for those that continued an earlier one, first where their checked
elements end, which rules out other sessions' bodies with one small comparison.
"""

from __future__ import annotations

import os
import sys
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from adapters.model import Call, TrajectoryEvent

_KEY_BYTES = 256  # bodies are grouped by their first bytes; a continuation shares at least these
_PER_KEY = 64  # bodies kept per group (the sessions of agents that share a system prompt share a group)
_WHITESPACE = b" \t\r\n"
_EVENT_BYTES = 500  # what a kept event costs besides its text (its objects, node id, name), roughly


@dataclass(slots=True, eq=False)  # compared by identity: a group is searched and pruned by the object
class _Earlier:
    raw: bytes  # the whole body
    field: str  # its history list's key
    open: int  # offset of the "[" that opens the list
    call: Call  # what the body decoded to
    anchored: bool  # the list at `open` is known to be the one `call` was decoded from
    checked_end: int  # raw[open+1:checked_end] is known to be exactly `checked_count` whole elements
    checked_count: int
    size: int  # what it counts against the bound: its bytes and its events
    events_size: int  # of which its events
    # A body that continues this one equals it before this offset: where its checked
    # elements end, or, for a body parsed whole, half its texts' length past `open`
    # (the list's bytes hold its texts; halved, so that a text an adapter writes
    # longer than its bytes, an image's placeholder say, cannot push it too far).
    floor: int = 0


@dataclass(frozen=True, slots=True)
class Continuation:
    """A body read as the continuation of an earlier one: ``body`` is the new body
    with only the list elements after ``prior``'s, to decode with ``prior``."""

    prior: Call
    body: dict[str, Any]
    entry: _Earlier
    end: int  # where prior's elements end in the new body


class ResendCache:
    def __init__(self, max_entries: int = 2048, max_bytes: int = 128 * 1024 * 1024) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes  # the bodies' bytes plus their decoded events (_EVENT_BYTES each)
        # The list element put where the earlier elements were: random, so that no
        # client can send it (a body whose list started with it would pass for a continuation).
        nonce = os.urandom(16).hex()
        self._marker = orjson.dumps(f"\x00proctor-continued-{nonce}")
        self._marker_value = f"\x00proctor-continued-{nonce}"
        self._entries: OrderedDict[int, _Earlier] = OrderedDict()  # by id(entry), least recent first
        self._groups: dict[bytes, list[_Earlier]] = {}
        self._bytes = 0
        self.hits = self.misses = 0  # over decoded calls: continued an earlier body, or parsed whole

    def find(self, raw: bytes, api: str, field: str) -> Continuation | None:
        """The earlier body of the same API that ``raw`` continues, and ``raw`` without
        its elements; or None."""
        best: _Earlier | None = None
        best_end = 0
        for entry in reversed(self._groups.get(raw[:_KEY_BYTES], ())):  # the most recent first
            if entry.field != field or entry.call.api != api:
                continue
            # A continuation shares every byte before `floor`: one comparison rules out another session's body.
            floor = entry.floor
            if raw[_KEY_BYTES:floor] != entry.raw[_KEY_BYTES:floor]:  # (the group's key: equal before _KEY_BYTES)
                continue
            d = _common_prefix(entry.raw, raw, max(floor, _KEY_BYTES))
            if d > best_end and d > entry.open and _next(entry.raw, d) == b"]" and _next(raw, d) == b",":
                best, best_end = entry, d
        if best is None or not self._checked(best, best_end):
            return None
        comma = _skip_space(raw, best_end)
        try:
            body = orjson.loads(raw[: best.open + 1] + self._marker + raw[comma:])
        except orjson.JSONDecodeError:
            return None
        items = body.get(field) if isinstance(body, dict) else None
        if not isinstance(items, list) or not items or items[0] != self._marker_value:
            return None
        del items[0]
        return Continuation(best.call, body, best, best_end)

    def _checked(self, entry: _Earlier, end: int) -> bool:
        """Whether ``entry.raw[open+1:end]`` is exactly the elements ``entry.call`` decoded.
        Both halves of the proof hold for one ``end`` before anything is kept as proven:
        the span is whole elements, as many as the call decoded, and (for a body parsed
        whole) a marker there comes back as the body's list, alone."""
        listed = entry.call.listed
        if listed is None:
            return False
        if entry.checked_end == end and entry.checked_count == listed.count:
            return True
        start, known = (entry.checked_end, entry.checked_count) if entry.checked_count else (entry.open + 1, 0)
        part = entry.raw[start:end]
        if known:  # what follows checked elements starts with the comma between them
            part = part.lstrip(_WHITESPACE)
            if not part.startswith(b","):
                return False
            part = part[1:]
        try:
            elements = orjson.loads(b"[" + part + b"]")
        except orjson.JSONDecodeError:
            return False
        if len(elements) != listed.count - known:
            return False
        if not entry.anchored:  # parsed whole: is the list at `open` the one it was decoded from?
            try:
                rest = orjson.loads(entry.raw[: entry.open + 1] + self._marker + entry.raw[end:])
            except orjson.JSONDecodeError:
                return False
            if not isinstance(rest, dict) or rest.get(entry.field) != [self._marker_value]:
                return False
        entry.anchored, entry.checked_end, entry.checked_count = True, end, listed.count
        entry.floor = max(entry.floor, end)  # its list ends there: a continuation shares all before
        return True

    def remember(self, raw: bytes, call: Call, continued: Continuation | None = None) -> None:
        """Keep ``raw`` (which decoded to ``call``) for the requests that continue it."""
        if continued is not None:
            self.hits += 1
            self._drop(continued.entry)  # this body supersedes it, whether it is kept or not
        else:
            self.misses += 1
        listed = call.listed
        if listed is None or listed.count == 0 or len(raw) < _KEY_BYTES:
            return
        # Only what a continuation needs is kept: the events, their nodes, the list's state.
        kept = Call(api=call.api, model=call.model, stream=call.stream, history=call.history, listed=listed,
                    nodes=call.nodes)
        if continued is not None:  # the earlier body's events were counted with it
            events = continued.entry.events_size + _events_size(call.history[len(continued.prior.history):])
        else:
            events = _events_size(call.history)
        size = len(raw) + events
        if size > self.max_bytes // 4:
            return
        if continued is not None:  # its list is known: where it opens, and the earlier elements in it
            earlier = continued.prior.listed.count if continued.prior.listed else 0
            entry = _Earlier(raw, listed.field, continued.entry.open, kept, True, continued.end, earlier, size, events,
                             floor=continued.end)
        else:
            at = _list_start(raw, listed.field)
            if at < 0:
                return
            texts = sum(len(ev.text) for ev in call.history[listed.head:] if ev.text)
            entry = _Earlier(raw, listed.field, at, kept, False, 0, 0, size, events, floor=at + 1 + texts // 2)
        group = self._groups.setdefault(raw[:_KEY_BYTES], [])
        group.append(entry)
        if len(group) > _PER_KEY:
            self._drop(group[0])
        self._entries[id(entry)] = entry
        self._bytes += size
        while self._entries and (len(self._entries) > self.max_entries or self._bytes > self.max_bytes):
            self._drop(next(iter(self._entries.values())))

    def _drop(self, entry: _Earlier) -> None:
        if self._entries.pop(id(entry), None) is None:
            return
        self._bytes -= entry.size
        key = entry.raw[:_KEY_BYTES]
        group = self._groups.get(key, [])
        if entry in group:
            group.remove(entry)
        if not group:
            self._groups.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)


def _events_size(events: Sequence[TrajectoryEvent]) -> int:
    """What keeping decoded events costs besides the body's bytes: the objects, their
    texts (copies of what the body holds, one to four bytes a character), and parsed
    tool arguments, which take up to eight times their JSON (a list of numbers: a
    float object and a slot for each)."""
    total = _EVENT_BYTES * len(events)
    for ev in events:
        if ev.text:
            total += sys.getsizeof(ev.text)
        if ev.arguments is not None and not isinstance(ev.arguments, str):
            try:
                total += 8 * len(orjson.dumps(ev.arguments))
            except TypeError:
                total += 8 * len(str(ev.arguments))
    return total


def _common_prefix(a: bytes, b: bytes, start: int = 0) -> int:
    """The length of the longest common prefix of ``a`` and ``b``, which agree
    before ``start``: equal blocks of doubling size, then halving within the first
    block that differs (byte slices compare with memcmp; 1.6 MB in about 0.1 ms)."""
    n = min(len(a), len(b))
    i, step = min(start, n), 256
    while i < n:
        j = min(n, i + step)
        if a[i:j] != b[i:j]:
            lo, hi = i, j
            while hi - lo > 8:
                mid = (lo + hi) // 2
                if a[lo:mid] == b[lo:mid]:
                    lo = mid
                else:
                    hi = mid
            while lo < hi and a[lo] == b[lo]:
                lo += 1
            return lo
        i, step = j, min(step * 2, 1 << 20)
    return n


def _skip_space(raw: bytes, i: int) -> int:
    while i < len(raw) and raw[i] in _WHITESPACE:
        i += 1
    return i


def _next(raw: bytes, i: int) -> bytes:
    """The first byte at or after ``i`` that is not JSON whitespace."""
    i = _skip_space(raw, i)
    return raw[i : i + 1]


def _list_start(raw: bytes, field: str) -> int:
    """Where the list of key ``field`` seems to open (the first ``"field": [``, past
    keys of that name that hold no list, such as a tool's parameter), or -1. Only a
    guess: a hit checks it (see the module docstring)."""
    key = b'"' + field.encode() + b'"'
    at = raw.find(key)
    while at >= 0:
        i = _skip_space(raw, at + len(key))
        if raw[i : i + 1] == b":":
            i = _skip_space(raw, i + 1)
            if raw[i : i + 1] == b"[":
                return i
        at = raw.find(key, at + len(key))
    return -1
