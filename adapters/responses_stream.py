"""The Responses stream filter (:class:`adapters.edits.StreamFilter`; see
:class:`ResponsesStreamFilter`)."""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson

from adapters.common import load_event
from adapters.edits import ActionEdit
from adapters.model import TrajectoryEvent
from adapters.openai_responses import ACTION_CALLS, ResponsesAdapter
from adapters.responses_items import (
    ADDED,
    DONE,
    FINAL_EVENTS,
    TEXT_DELTAS,
    WIRE,
    Json,
    edited,
    identity,
    is_call,
    message_events,
    position,
)
from adapters.sse import SSEParser, encode_sse

# A blank line (two line ends in a row, "\r\n" counting as one) ends an SSE event.
_EVENT_END = re.compile(rb"(?:\r\n|\n|\r(?!\n))(?:\r\n|\n|\r(?!\n))")


@dataclass(slots=True)
class _Frame:
    """One SSE event as it arrived (``raw``) and what it says (None: a comment or junk)."""

    raw: bytes
    event: str | None = None
    data: Json | None = None
    kind: Any = None
    index: int | None = None  # output_index
    call: bool = False  # an output_item.added/done that carries a tool call item


@dataclass(slots=True)
class _Held:
    """A complete call awaiting its verdict: its frames (and comments among them), in order."""

    index: int
    span: list[_Frame]
    added: Json
    item: Json
    named: bool  # the stream names its events (``event:`` lines)


class ResponsesStreamFilter:
    """The :class:`adapters.edits.StreamFilter` of Responses streams.

    Output keeps input order: events flow as soon as they are whole, except from
    a tool call's first event on, where everything waits until that call is
    complete (at its ``output_item.done`` or the terminal event, the decoder's
    rule) and decided. Items stream one at a time, so in practice only the call
    itself waits. Frames pass byte for byte while their sequence numbers still
    agree and no rewritten call shows in them; the others are re-encoded.
    """

    def __init__(self, adapter: ResponsesAdapter) -> None:
        self._adapter = adapter
        self._sse = SSEParser()
        self._buf = bytearray()  # bytes of an unfinished event
        self._scan = 0  # where to resume looking for a blank line in _buf
        self._cr = False  # a "\r" was seen: line ends need the full rules
        self._frames: deque[_Frame] = deque()  # whole events not yet sent
        self._complete: set[int] = set()  # output indexes whose call item is done
        self._final_seen = False
        self._closed = False
        self._held: _Held | None = None
        self._ready: list[bytes] = []
        self._seq: int | None = None  # the next sequence_number to send
        self._said = False  # assistant text has been sent
        self._replaced: dict[int, tuple[str | None, Json]] = {}  # output index -> (call identity, new item)
        self._allowed: dict[str | None, Json] = {}  # call identity -> the call as judged and let through

    def feed(self, chunk: bytes) -> None:
        buf = self._buf
        buf += chunk
        start = 0
        if not self._cr and b"\r" not in chunk:  # the usual "\n"-only stream: a C-speed search
            end = buf.find(b"\n\n", self._scan)
            while end >= 0:
                self._take(bytes(buf[start : end + 2]))
                start = end + 2
                end = buf.find(b"\n\n", start)
        else:
            self._cr = True
            for match in _EVENT_END.finditer(buf, self._scan):
                end = match.end()
                if end == len(buf) and buf[end - 1] == 0x0D:  # this "\r" may be half of a "\r\n"
                    break
                self._take(bytes(buf[start:end]))
                start = end
        if start:
            del buf[:start]
        self._scan = max(0, len(buf) - 3)  # a blank line spans at most 4 bytes

    def next(self) -> bytes | TrajectoryEvent | None:
        if self._held is not None:
            return None
        out, self._ready = self._ready, []
        frames = self._frames
        while frames:
            frame = frames[0]
            if frame.call:
                if frame.index in self._complete or self._final_seen:
                    if out:  # what came before the call goes first
                        break
                    return self._hold(frame)
                if not self._closed:
                    break
            frames.popleft()
            out.append(self._emit(frame))
        return b"".join(out) or None

    def decide(self, edit: ActionEdit) -> None:
        held = self._held
        if held is None:
            raise RuntimeError("decide() called with no tool call awaiting a verdict; next() hands them out")
        self._held = None
        if edit.verdict == "allow":
            self._allowed[identity(held.item)] = held.item
            self._ready.append(b"".join([self._emit(frame) for frame in held.span]))
            return
        new = edited(held.item, edit, self._said)
        events = _patch_events(held, new) if edit.verdict == "patch" else message_events(held.index, new)
        self._replaced[held.index] = (identity(held.item), new)
        out = [self._emit_new(event, held.named) for event in events]
        out += [frame.raw for frame in held.span if frame.data is None]
        self._ready.append(b"".join(out))

    def close(self) -> None:
        """Whatever is still held goes out as it came: a cut call is not judged, and
        its client sees the same broken stream the upstream sent."""
        self._closed = True
        if self._buf:
            self._take(bytes(self._buf))
            self._buf.clear()

    def _take(self, raw: bytes) -> None:
        events = self._sse.feed(raw)
        if not events:
            self._frames.append(_Frame(raw))
            return
        last = len(events) - 1  # a frame ends at its first blank line: one event, unless the parser disagrees
        for n, event in enumerate(events):
            data = load_event(event.data)
            frame = _Frame(raw if n == last else b"", event.event, data)
            if data is not None:
                frame.kind = kind = data.get("type")
                index = data.get("output_index")
                if type(index) is int:
                    frame.index = index
                    item = data.get("item")
                    if kind in (ADDED, DONE) and is_call(item):
                        frame.call = True
                        if kind == DONE:
                            self._complete.add(index)
                elif kind in FINAL_EVENTS and isinstance(data.get("response"), dict):
                    self._final_seen = True
            self._frames.append(frame)

    def _hold(self, head: _Frame) -> TrajectoryEvent:
        """Take the call's frames (and comments among them) out of the queue; the
        frames of other items and the terminal event stay queued, in order."""
        index = head.index
        assert index is not None
        span: list[_Frame] = []
        rest: deque[_Frame] = deque()
        open_ = True
        for frame in self._frames:
            if open_ and (frame.index == index or frame.data is None):
                span.append(frame)
                open_ = not (frame.call and frame.kind == DONE)
            else:
                open_ = open_ and frame.kind not in FINAL_EVENTS
                rest.append(frame)
        self._frames = rest
        first: Json = head.data["item"] if head.data else {}  # a call frame always has its item
        added = next((f.data["item"] for f in span if f.call and f.kind == ADDED and f.data), first)
        done = next((f.data["item"] for f in span if f.call and f.kind == DONE and f.data), None)
        item = done or _final_item(rest, index, added) or added
        self._held = _Held(index, span, added, item, head.event is not None)
        return self._adapter.decode_response({"output": [item]}).events[0]

    def _emit(self, frame: _Frame) -> bytes:
        """The frame's bytes as they must now read: its own bytes unless renumbered or edited."""
        data = frame.data
        if data is None:
            return frame.raw
        if not self._said and frame.kind in TEXT_DELTAS and data.get("delta"):
            self._said = True
        fresh: Json | None = None
        seq = data.get("sequence_number")
        if type(seq) is int:
            if self._seq is None:
                self._seq = seq
            if seq != self._seq:
                fresh = {**data, "sequence_number": self._seq}
            self._seq += 1
        if frame.kind in FINAL_EVENTS and isinstance(data.get("response"), dict):
            response = self._summary(data["response"])
            if response is not None:
                fresh = {**(fresh or data), "response": response}
        return frame.raw if fresh is None else encode_sse(orjson.dumps(fresh), frame.event)

    def _emit_new(self, data: Json, named: bool) -> bytes:
        seq = self._seq if self._seq is not None else data.get("sequence_number")
        if type(seq) is int:
            data = {"type": data["type"], "sequence_number": seq, **data}  # where the API puts it
            data["sequence_number"] = seq
            self._seq = seq + 1
        if data["type"] in TEXT_DELTAS and data.get("delta"):
            self._said = True
        return encode_sse(orjson.dumps(data), data["type"] if named else None)

    def _summary(self, response: Json) -> Json | None:
        """The terminal ``response`` with its calls as they were judged: rewritten ones
        replaced, and any call the stream did not deliver for judging (or delivered
        other than the summary lists it) taken out or put back as judged, since SDKs
        build the final response from this summary. None when it needs no change."""
        output = response.get("output")
        if not isinstance(output, list) or not output:
            return None
        new = list(output)
        changed = False
        for index, (known, item) in self._replaced.items():
            at = position(new, index, known)
            if at is not None:
                new[at] = item
                changed = True
        rewritten = {id(item) for _, item in self._replaced.values()}
        kept = []
        for item in new:
            if is_call(item) and id(item) not in rewritten:
                judged = self._allowed.get(identity(item))
                if judged is None:  # never streamed for judging: no client may get it
                    changed = True
                    continue
                if judged != item:
                    item, changed = judged, True
            kept.append(item)
        return {**response, "output": kept} if changed else None


def _final_item(rest: deque[_Frame], index: int, added: Json) -> Json | None:
    """The call as the terminal event lists it (a call that had no output_item.done)."""
    for frame in rest:
        response = frame.data.get("response") if frame.kind in FINAL_EVENTS and frame.data else None
        if isinstance(response, dict):
            output = response.get("output")
            if isinstance(output, list):
                at = position(output, index, identity(added))
                return output[at] if at is not None else None
    return None


def _patch_events(held: _Held, item: Json) -> list[Json]:
    """The call streamed again with its new arguments in one delta; the original
    events serve as templates so fields this module does not know survive."""
    index = held.index
    seen = {frame.kind: frame.data for frame in held.span if frame.data is not None}
    if item["type"] in ACTION_CALLS:  # streamed whole, with no deltas
        return [
            {**seen.get(ADDED, {"type": ADDED, "output_index": index}), "item": item},
            {**seen.get(DONE, {"type": DONE, "output_index": index}), "item": item},
        ]
    key, delta_type, done_type = WIRE[item["type"]]
    value = item[key]
    where = {"item_id": item.get("id"), "output_index": index}
    return [
        {**seen.get(ADDED, {"type": ADDED, "output_index": index}), "item": {**held.added, key: ""}},
        {"type": delta_type, **where, "delta": value},
        {**seen.get(done_type, {"type": done_type, **where}), key: value},
        {**seen.get(DONE, {"type": DONE, "output_index": index}), "item": item},
    ]
