"""Policy edits on OpenAI Responses replies: whole bodies and SSE streams.

A denied tool call leaves an assistant ``message`` item at the same output
position, so output indexes never move and the reply reads as text where the
call was; a patched call keeps its item id and call id and gets new arguments.

The openai SDK checks a stream strictly (``response.created`` first, each
``output_item.done`` matching its ``added``, no output index twice, every added
item listed by ``response.completed``), so once a call is rewritten the events
after it are renumbered and the terminal event's ``output`` is edited the same
way the items were. The id of a stand-in message derives from the call's ids:
one reply rewritten twice, streamed or not, reads the same.

A refusal that follows assistant text starts with a blank line, because
clients join the text of all message items with "" (``Response.output_text``).
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson

from adapters.common import load_event, str_or_none
from adapters.edits import ActionEdit, TextEdit
from adapters.model import Call, TrajectoryEvent
from adapters.openai_responses import ACTION_CALLS, ResponsesAdapter, action_fields
from adapters.sse import SSEParser, encode_sse

Json = dict[str, Any]

# The Responses adapter's own sets, so both judge the same items.
_CALLS = frozenset({"function_call", "custom_tool_call", *ACTION_CALLS})
_FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
_TEXT_DELTAS = frozenset({"response.output_text.delta", "response.refusal.delta"})
_ADDED = "response.output_item.added"
_DONE = "response.output_item.done"
# Per call item type: the field that holds its arguments, and the events that stream it.
_WIRE = {
    "function_call": ("arguments", "response.function_call_arguments.delta", "response.function_call_arguments.done"),
    "custom_tool_call": ("input", "response.custom_tool_call_input.delta", "response.custom_tool_call_input.done"),
}
# A blank line (two line ends in a row, "\r\n" counting as one) ends an SSE event.
_EVENT_END = re.compile(rb"(?:\r\n|\n|\r(?!\n))(?:\r\n|\n|\r(?!\n))")


class ResponsesEnforcer:
    """The :class:`adapters.edits.Enforcer` of ``POST /v1/responses``; stateless."""

    api = "responses"

    def __init__(self, adapter: ResponsesAdapter | None = None) -> None:
        self._adapter = adapter or ResponsesAdapter()

    def rewrite_response(self, body: Json, edits: list[ActionEdit], text: TextEdit | None) -> Json:
        """``body`` with its calls edited in output order; the input is never mutated.

        ``text`` replaces all of the model's message text: it goes into the first
        message item and later message items are dropped, so a redacted answer
        cannot survive in a second item. Raises ValueError when ``edits`` does not
        hold exactly one verdict per call: an unjudged call must never pass.
        """
        output = body.get("output")
        items: list[Any] = output if isinstance(output, list) else []
        calls = sum(1 for item in items if _is_call(item))
        if calls != len(edits):
            raise ValueError(f"got {len(edits)} edits for {calls} tool calls; pass one ActionEdit per call")
        if text is None and all(edit.verdict == "allow" for edit in edits):
            return body
        verdicts = iter(edits)
        new: list[Any] = []
        said = False  # assistant text comes before this position
        placed = text is None
        for item in items:
            if text is not None and isinstance(item, dict) and item.get("type") == "message":
                if placed:
                    continue
                item, placed = {**item, "content": [_text_part(text.text)]}, True
            elif _is_call(item):
                if not placed and text is not None:  # the model said nothing before its first call
                    new.append(_message(_derived_id(f"{body.get('id')}|text"), text.text))
                    placed, said = True, bool(text.text)
                edit = next(verdicts)
                if edit.verdict != "allow":
                    item = _edited(item, edit, said)
            new.append(item)
            said = said or _has_text(item)
        if not placed and text is not None:
            new.append(_message(_derived_id(f"{body.get('id')}|text"), text.text))
        return {**body, "output": new}

    def text_reply(self, call: Call, text: str) -> Json:
        """A completed response whose only output is ``text``, with zero usage."""
        now = int(time.time())
        metadata = call.metadata.get("metadata")
        return {
            "id": _random_id("resp_"),
            "object": "response",
            "created_at": now,
            "status": "completed",
            "background": False,
            "completed_at": now,
            "error": None,
            "incomplete_details": None,
            "instructions": None,
            "model": call.model,
            "output": [_message(_random_id("msg_"), text)],
            "parallel_tool_calls": True,
            "previous_response_id": call.previous_response_id,
            "conversation": {"id": call.conversation} if call.conversation else None,
            "store": call.store if call.store is not None else True,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "truncation": "disabled",
            "usage": {
                "input_tokens": 0,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": 0,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": 0,
            },
            "metadata": metadata if isinstance(metadata, dict) else {},
        }

    def text_reply_stream(self, call: Call, text: str) -> bytes:
        """:meth:`text_reply` as the event sequence the API streams."""
        done = self.text_reply(call, text)
        start = {**done, "status": "in_progress", "completed_at": None, "output": [], "usage": None}
        events = [
            {"type": "response.created", "response": start},
            {"type": "response.in_progress", "response": start},
            *_message_events(0, done["output"][0]),
            {"type": "response.completed", "response": done},
        ]
        return b"".join(
            encode_sse(orjson.dumps({**event, "sequence_number": n}), event["type"]) for n, event in enumerate(events)
        )

    def stream_filter(self) -> ResponsesStreamFilter:
        return ResponsesStreamFilter(self._adapter)


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
            self._allowed[_identity(held.item)] = held.item
            self._ready.append(b"".join([self._emit(frame) for frame in held.span]))
            return
        new = _edited(held.item, edit, self._said)
        events = _patch_events(held, new) if edit.verdict == "patch" else _message_events(held.index, new)
        self._replaced[held.index] = (_identity(held.item), new)
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
                    if kind in (_ADDED, _DONE) and _is_call(item):
                        frame.call = True
                        if kind == _DONE:
                            self._complete.add(index)
                elif kind in _FINAL_EVENTS and isinstance(data.get("response"), dict):
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
                open_ = not (frame.call and frame.kind == _DONE)
            else:
                open_ = open_ and frame.kind not in _FINAL_EVENTS
                rest.append(frame)
        self._frames = rest
        first: Json = head.data["item"] if head.data else {}  # a call frame always has its item
        added = next((f.data["item"] for f in span if f.call and f.kind == _ADDED and f.data), first)
        done = next((f.data["item"] for f in span if f.call and f.kind == _DONE and f.data), None)
        item = done or _final_item(rest, index, added) or added
        self._held = _Held(index, span, added, item, head.event is not None)
        return self._adapter.decode_response({"output": [item]}).events[0]

    def _emit(self, frame: _Frame) -> bytes:
        """The frame's bytes as they must now read: its own bytes unless renumbered or edited."""
        data = frame.data
        if data is None:
            return frame.raw
        if not self._said and frame.kind in _TEXT_DELTAS and data.get("delta"):
            self._said = True
        fresh: Json | None = None
        seq = data.get("sequence_number")
        if type(seq) is int:
            if self._seq is None:
                self._seq = seq
            if seq != self._seq:
                fresh = {**data, "sequence_number": self._seq}
            self._seq += 1
        if frame.kind in _FINAL_EVENTS and isinstance(data.get("response"), dict):
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
        if data["type"] in _TEXT_DELTAS and data.get("delta"):
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
        for index, (identity, item) in self._replaced.items():
            at = _position(new, index, identity)
            if at is not None:
                new[at] = item
                changed = True
        edited = {id(item) for _, item in self._replaced.values()}
        kept = []
        for item in new:
            if _is_call(item) and id(item) not in edited:
                judged = self._allowed.get(_identity(item))
                if judged is None:  # never streamed for judging: no client may get it
                    changed = True
                    continue
                if judged != item:
                    item, changed = judged, True
            kept.append(item)
        return {**response, "output": kept} if changed else None


def _is_call(item: Any) -> bool:
    return isinstance(item, dict) and item.get("type") in _CALLS


def _identity(item: Json) -> str | None:
    return str_or_none(item.get("call_id")) or str_or_none(item.get("id"))


def _position(output: list[Any], index: int, identity: str | None) -> int | None:
    """Where the call streamed at ``index`` sits in a response's output: at the same
    index normally, found by its ids if the list is laid out differently."""
    if index < len(output) and _is_call(output[index]) and _identity(output[index]) == identity:
        return index
    if identity is None:
        return None
    return next((i for i, x in enumerate(output) if _is_call(x) and _identity(x) == identity), None)


def _final_item(rest: deque[_Frame], index: int, added: Json) -> Json | None:
    """The call as the terminal event lists it (a call that had no output_item.done)."""
    for frame in rest:
        response = frame.data.get("response") if frame.kind in _FINAL_EVENTS and frame.data else None
        if isinstance(response, dict):
            output = response.get("output")
            if isinstance(output, list):
                at = _position(output, index, _identity(added))
                return output[at] if at is not None else None
    return None


def _edited(item: Json, edit: ActionEdit, after_text: bool) -> Json:
    """What stands where call ``item`` was: itself with new arguments, or a message
    saying why it is gone. Any verdict but allow and patch denies (fail closed)."""
    if edit.verdict == "patch" and item["type"] in ACTION_CALLS:  # a built-in tool's action, an object
        fields = action_fields(item)
        if len(fields) == 1:
            return {**item, fields[0]: edit.arguments}
        patch = edit.arguments if isinstance(edit.arguments, dict) else {}
        return {**{k: v for k, v in item.items() if k not in fields}, **{f: patch[f] for f in fields if f in patch}}
    if edit.verdict == "patch":
        key = _WIRE[item["type"]][0]
        arguments = edit.arguments
        # function arguments are a JSON string; custom tool input is free text
        if not (item["type"] == "custom_tool_call" and isinstance(arguments, str)):
            arguments = orjson.dumps(arguments).decode()
        return {**item, key: arguments}
    message = edit.message if edit.message is not None else f"The call to {item.get('name') or ACTION_CALLS.get(item['type'], ('a tool',))[0]} was denied by policy."
    return _message(_derived_id(f"{item.get('id')}|{item.get('call_id')}"), f"\n\n{message}" if after_text else message)


def _patch_events(held: _Held, item: Json) -> list[Json]:
    """The call streamed again with its new arguments in one delta; the original
    events serve as templates so fields this module does not know survive."""
    index = held.index
    seen = {frame.kind: frame.data for frame in held.span if frame.data is not None}
    if item["type"] in ACTION_CALLS:  # streamed whole, with no deltas
        return [
            {**seen.get(_ADDED, {"type": _ADDED, "output_index": index}), "item": item},
            {**seen.get(_DONE, {"type": _DONE, "output_index": index}), "item": item},
        ]
    key, delta_type, done_type = _WIRE[item["type"]]
    value = item[key]
    where = {"item_id": item.get("id"), "output_index": index}
    return [
        {**seen.get(_ADDED, {"type": _ADDED, "output_index": index}), "item": {**held.added, key: ""}},
        {"type": delta_type, **where, "delta": value},
        {**seen.get(done_type, {"type": done_type, **where}), key: value},
        {**seen.get(_DONE, {"type": _DONE, "output_index": index}), "item": item},
    ]


def _message_events(index: int, item: Json) -> list[Json]:
    """The events that stream message ``item`` (one text part) at ``index``."""
    where = {"item_id": item["id"], "output_index": index, "content_index": 0}
    part = item["content"][0]
    return [
        {"type": _ADDED, "output_index": index, "item": {**item, "status": "in_progress", "content": []}},
        {"type": "response.content_part.added", **where, "part": {**part, "text": ""}},
        {"type": "response.output_text.delta", **where, "delta": part["text"], "logprobs": []},
        {"type": "response.output_text.done", **where, "text": part["text"], "logprobs": []},
        {"type": "response.content_part.done", **where, "part": part},
        {"type": _DONE, "output_index": index, "item": item},
    ]


def _text_part(text: str) -> Json:
    return {"type": "output_text", "text": text, "annotations": []}


def _message(item_id: str, text: str) -> Json:
    return {"id": item_id, "type": "message", "status": "completed", "role": "assistant", "content": [_text_part(text)]}


def _has_text(item: Any) -> bool:
    content = item.get("content") if isinstance(item, dict) and item.get("type") == "message" else None
    if isinstance(content, str):
        return bool(content)
    parts = content if isinstance(content, list) else ()
    return any(isinstance(p, dict) and (p.get("text") or p.get("refusal")) for p in parts)


def _derived_id(seed: str) -> str:
    return "msg_" + hashlib.blake2b(seed.encode(), digest_size=24).hexdigest()


def _random_id(prefix: str) -> str:
    return prefix + (uuid.uuid4().hex + uuid.uuid4().hex)[:48]


# The output item that answers a denied call, by the call's kind (built-in tools'
# outputs need data no one has, a screenshot say: their calls are not answered).
_ANSWERS = {"function": "function_call_output", "custom": "custom_tool_call_output"}


def answer_type(event: TrajectoryEvent) -> str | None:
    """The output item type that answers this tool call, if Proctor can write one."""
    if event.labels.get("builtin"):
        return None
    return _ANSWERS["custom" if event.labels.get("free_text") else "function"]


def with_denied_answered(body: Json, denied: list[tuple[str, str, str]]) -> Json | None:
    """``body`` (a Responses request continuing a response by previous_response_id)
    with an output for each call Proctor denied out of that response and the request
    does not answer: the upstream kept those calls and refuses a continuation that
    leaves one unanswered. None when nothing is missing."""
    items = body.get("input")
    items = [{"role": "user", "content": items}] if isinstance(items, str) else items if isinstance(items, list) else []
    answered = {item.get("call_id") for item in items if isinstance(item, dict) and str(item.get("type", "")).endswith("_output")}
    missing = [(call_id, kind, why) for call_id, kind, why in denied if call_id not in answered]
    if not missing:
        return None
    outputs = [{"type": kind, "call_id": call_id, "output": f"Proctor denied this call, it was not run: {why}"}
               for call_id, kind, why in missing]
    return {**body, "input": [*outputs, *items]}
