"""Enforcement for Anthropic Messages replies: the :class:`~adapters.edits.Enforcer`
of ``/v1/messages``.

A denied ``tool_use`` block becomes a ``text`` block *at the same position*
(same ``index`` in a stream) that carries the refusal. Keeping positions means a
stream never needs renumbering, and the streamed and non-streamed paths give
the same content, so the trajectory the proxy records does not depend on how
the client asked. A refusal that follows earlier text starts with a blank line,
so the decoded assistant text reads "text, then each refusal on its own
paragraph". When no ``tool_use`` block is left, ``stop_reason`` ``"tool_use"``
becomes ``"end_turn"``: SDK agent loops stop on that and show the text.
"""

from __future__ import annotations

import re
import secrets
import string
from typing import Any

import orjson

from adapters.common import load_event, parse_arguments, str_or_none
from adapters.edits import ActionEdit, TextEdit
from adapters.model import Call, EventKind, TrajectoryEvent
from adapters.sse import SSEParser, encode_sse

Json = dict[str, Any]

# Where an SSE event ends: a line terminator followed by an empty line. The
# groups are atomic so "\r\n" is never read as "\r" then "\n" (a blank line).
_EVENT_END = re.compile(rb"(?>\r\n|\r|\n)(?>\r\n|\r|\n)")
_ID_ALPHABET = string.ascii_letters + string.digits
_THINKING = frozenset({"thinking", "redacted_thinking"})


class MessagesEnforcer:
    """Applies policy verdicts to Messages replies; stateless, one instance serves every call."""

    api = "messages"

    def rewrite_response(self, body: Json, edits: list[ActionEdit], text: TextEdit | None) -> Json:
        """``body`` with its ``tool_use`` blocks edited in order and its text replaced.

        Returns ``body`` itself when nothing changes (the proxy then forwards the
        upstream bytes). ``TextEdit`` replaces the model's text (the first text
        block takes it, later ones go); refusals of denied calls still follow,
        because they are the proxy's words, not the model's. A verdict other than
        allow or patch counts as deny: unknown means no.
        """
        content = body.get("content")
        blocks: list[Any] = content if isinstance(content, list) else []
        uses = sum(1 for block in blocks if _block_type(block) == "tool_use")
        if len(edits) != uses:
            raise ValueError(f"{len(edits)} edits for a reply with {uses} tool_use blocks; give one per block")
        if text is None and all(edit.verdict == "allow" for edit in edits):
            return body
        if text is not None:
            blocks = _replace_text(blocks, text.text)
        out: list[Any] = []
        verdicts = iter(edits)
        text_before = kept = False
        for block in blocks:
            kind = _block_type(block)
            if kind == "tool_use":
                edit = next(verdicts)
                if edit.verdict == "patch":
                    block = {**block, "input": _input(edit.arguments)}
                elif edit.verdict != "allow":
                    block = {"type": "text", "text": _refusal(edit, block.get("name"), text_before)}
                    kind = "text"
                kept = kept or kind == "tool_use"
            text_before = text_before or kind == "text"
            out.append(block)
        rewritten = {**body, "content": out}
        if not kept and body.get("stop_reason") == "tool_use":
            rewritten["stop_reason"] = "end_turn"
        return rewritten

    def text_reply(self, call: Call, text: str) -> Json:
        """A finished message that says ``text``, as if the model had (no tokens used)."""
        return {
            **_message_head(call.model),
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
        }

    def text_reply_stream(self, call: Call, text: str) -> bytes:
        """:meth:`text_reply` as the event sequence the API streams."""
        start = {**_message_head(call.model), "content": [], "stop_reason": None, "stop_sequence": None}
        events = [_sse({"type": "message_start", "message": start}), *_text_block(0, text)]
        stop = {"stop_reason": "end_turn", "stop_sequence": None}
        events.append(_sse({"type": "message_delta", "delta": stop, "usage": {"output_tokens": 0}}))
        events.append(_sse({"type": "message_stop"}))
        return b"".join(events)

    def stream_filter(self) -> MessagesStreamFilter:
        return MessagesStreamFilter()


class MessagesStreamFilter:
    """The :class:`~adapters.edits.StreamFilter` for Messages streams.

    Events outside ``tool_use`` blocks go out as their original bytes as soon as
    they are complete; only ``content_block_start`` and (after a denial)
    ``message_delta`` are even parsed, because this runs on every chunk. A
    ``tool_use`` block is held from its ``content_block_start`` to its
    ``content_block_stop`` (the decoder's completion rule), and everything
    after it waits until :meth:`decide`. Anthropic streams one block at a time,
    so holding the rest costs nothing in practice and keeps the order intact.
    """

    __slots__ = (
        "_buf",
        "_closed",
        "_cr",
        "_cr_cut",
        "_denied",
        "_handed",
        "_held",
        "_json",
        "_kept",
        "_out",
        "_pending",
        "_queued",
        "_scan",
        "_sse",
        "_start",
        "_text_before",
    )

    def __init__(self) -> None:
        self._buf = bytearray()  # bytes of the unfinished event
        self._scan = 0  # where in _buf the search for an event end resumes
        self._sse = SSEParser()
        self._out = bytearray()  # bytes ready for next()
        self._held: list[tuple[bytes, Json | None]] | None = None  # the open tool_use block's events
        self._start: Json = {}  # its content_block_start event
        self._json: list[str] = []  # its arguments so far
        self._pending: TrajectoryEvent | None = None  # the complete call awaiting decide()
        self._handed = False  # next() has returned _pending
        self._queued: list[bytes] = []  # events that arrived after _pending, in order
        self._text_before = False  # a text block went out: refusals start a new paragraph
        self._kept = 0  # tool_use blocks released (allowed or patched)
        self._denied = 0
        self._closed = False
        self._cr = False  # a CR was seen: line ends may be CR LF or CR alone
        self._cr_cut = False  # the last event ended a chunk with CR: an LF may still follow

    def feed(self, chunk: bytes) -> None:
        if self._closed or not chunk:
            return
        self._buf += chunk
        self._cr = self._cr or b"\r" in chunk
        self._frame()

    def next(self) -> bytes | TrajectoryEvent | None:
        if self._out:
            out = bytes(self._out)
            self._out.clear()
            return out
        if self._pending is not None and not self._handed:
            self._handed = True
            return self._pending
        return None

    def decide(self, edit: ActionEdit) -> None:
        """Release (allow), re-encode (patch) or replace (deny) the call next() handed out."""
        if self._pending is None or not self._handed or self._held is None:
            raise RuntimeError("decide() was called with no tool call awaiting a verdict")
        held, index = self._held, self._start["index"]
        self._held, self._pending, self._handed = None, None, False
        if edit.verdict == "allow":
            self._kept += 1
            for raw, _ in held:
                self._out += raw
        else:
            self._release_edited(held, index, edit)
        queued, self._queued = self._queued, []
        for n, raw in enumerate(queued):
            if self._pending is not None:  # the next call completed: the rest waits for it
                self._queued.extend(queued[n:])
                break
            self._route(raw)
        if self._closed:
            self._flush_closed()

    def close(self) -> None:
        """Route the last event, then release a partial call and unfinished bytes as is.

        A complete call still awaiting :meth:`decide` stays held: releasing it
        unjudged would let a stream that ends at the wrong moment bypass policy.
        """
        if self._closed:
            return
        self._frame(final=True)
        self._closed = True
        self._flush_closed()

    # ---- internals ----------------------------------------------------------

    def _frame(self, *, final: bool = False) -> None:
        """Cut complete events off the front of _buf and route each one.

        An event that ends a chunk in CR may still get the LF of a CR LF. One
        that goes out as is goes now (waiting would delay every event of a
        stream whose lines end in CR alone) and such an LF follows on its own;
        one that may be rewritten waits for the next byte, so that what gets
        replaced never depends on where the chunks were split."""
        buf, pos = self._buf, 0
        if self._cr_cut and buf[:1] == b"\n":
            pos = 1
            self._take(b"\n")
        self._cr_cut = False
        while (cut := self._event_end(max(pos, self._scan))) > 0:
            raw = bytes(buf[pos:cut])
            if cut == len(buf) and raw[-1] == 0x0D and not final:
                if not self._passes(raw):
                    break
                self._cr_cut = True
            pos = cut
            self._take(raw)
        if pos:
            del buf[:pos]
        self._scan = max(0, len(buf) - 3)  # an event end is at most 4 bytes: rescan the tail only

    def _event_end(self, start: int) -> int:
        """Where the first event ending at or after ``start`` ends, or -1. A stream
        with no CR at all (every model API in practice) takes the quick search."""
        if not self._cr:
            at = self._buf.find(b"\n\n", start)
            return at + 2 if at >= 0 else -1
        end = _EVENT_END.search(self._buf, start)
        return end.end() if end is not None else -1

    def _passes(self, raw: bytes) -> bool:
        """Whether ``raw`` (an event that ends a chunk in CR) goes out unchanged."""
        if self._held is not None or self._pending is not None:
            return False
        if b"content_block_start" in raw:
            return not _is_tool_start(self._parse(raw))
        if self._denied and not self._kept and b"message_delta" in raw:
            return _end_turn(raw, self._parse(raw)) is raw
        return True

    def _take(self, raw: bytes) -> None:
        if self._pending is not None:
            self._queued.append(raw)
        else:
            self._route(raw)

    def _route(self, raw: bytes) -> None:
        """One complete event, when no judged call blocks the way."""
        if self._held is not None:
            self._hold(raw)
            return
        if b"content_block_start" in raw:
            data = self._parse(raw)
            if _is_tool_start(data):
                assert data is not None
                self._held, self._start, self._json = [(raw, data)], data, []
                return
            if data is not None and _block_type(data.get("content_block")) == "text":
                self._text_before = True
        elif self._denied and not self._kept and b"message_delta" in raw:
            raw = _end_turn(raw, self._parse(raw))
        self._out += raw

    def _hold(self, raw: bytes) -> None:
        """An event inside the open tool_use block; its stop makes the call complete."""
        assert self._held is not None
        data = self._parse(raw)
        self._held.append((raw, data))
        if data is None or data.get("index") != self._start["index"]:
            return
        kind = data.get("type")
        if kind == "content_block_delta":
            delta = data.get("delta")
            if isinstance(delta, dict) and delta.get("type") == "input_json_delta":
                partial = delta.get("partial_json")
                if isinstance(partial, str):
                    self._json.append(partial)
        elif kind == "content_block_stop":
            self._pending = _tool_call(self._start["content_block"], self._json)

    def _release_edited(self, held: list[tuple[bytes, Json | None]], index: int, edit: ActionEdit) -> None:
        """The held block with one delta carrying the new arguments (patch), or
        replaced by a text block that carries the refusal (deny)."""
        if edit.verdict == "patch":
            self._kept += 1
            arguments = orjson.dumps(_input(edit.arguments)).decode()
            delta = {"type": "input_json_delta", "partial_json": arguments}
            start, stop = held[0][0], held[-1][0]
            body = _sse({"type": "content_block_delta", "index": index, "delta": delta})
        else:
            self._denied += 1
            text = _refusal(edit, self._start["content_block"].get("name"), self._text_before)
            start, body, stop = _text_block(index, text)
            self._text_before = True
        for raw, data in held:
            kind = data.get("type") if data is not None and data.get("index") == index else None
            if kind == "content_block_start":
                self._out += start
            elif kind == "content_block_stop":
                self._out += body
                self._out += stop
            elif kind != "content_block_delta":  # pings and comments keep their place
                self._out += raw

    def _flush_closed(self) -> None:
        """After close(): everything not waiting for a verdict goes out as it arrived."""
        if self._pending is not None:
            return
        if self._held is not None:
            for raw, _ in self._held:
                self._out += raw
            self._held = None
        self._out += self._buf
        self._buf.clear()

    def _parse(self, raw: bytes) -> Json | None:
        events = self._sse.feed(raw)
        return load_event(events[0].data) if events else None


def _tool_call(block: Json, json: list[str]) -> TrajectoryEvent:
    """The TOOL_CALL event, built exactly as MessagesStreamDecoder builds it: the
    streamed JSON when there is any, else the start block's ``input``."""
    raw = "".join(json)
    return TrajectoryEvent(
        kind=EventKind.TOOL_CALL,
        tool_name=str_or_none(block.get("name")),
        arguments=parse_arguments(raw) if raw.strip() else block.get("input"),
        tool_call_id=str_or_none(block.get("id")),
        role="assistant",
    )


def _replace_text(blocks: list[Any], text: str) -> list[Any]:
    """The first text block says ``text`` and the others go; with no text block,
    one goes right after the leading thinking blocks (the API wants those first)."""
    out: list[Any] = []
    placed = False
    for block in blocks:
        if _block_type(block) != "text":
            out.append(block)
        elif not placed:
            out.append({"type": "text", "text": text})  # old citations point into the old text
            placed = True
    if not placed:
        at = next((i for i, block in enumerate(out) if _block_type(block) not in _THINKING), len(out))
        out.insert(at, {"type": "text", "text": text})
    return out


def _end_turn(raw: bytes, data: Json | None) -> bytes:
    """A ``message_delta`` that says ``tool_use`` when every tool_use block was denied."""
    delta = data.get("delta") if data is not None and data.get("type") == "message_delta" else None
    if data is None or not isinstance(delta, dict) or delta.get("stop_reason") != "tool_use":
        return raw
    return _sse({**data, "delta": {**delta, "stop_reason": "end_turn"}})


def _refusal(edit: ActionEdit, name: Any, text_before: bool) -> str:
    """The refusal text; a new paragraph when text precedes it."""
    message = edit.message or (f"The tool call {name} was denied by policy." if name else "A tool call was denied.")
    return "\n\n" + message if text_before else message


def _input(arguments: Any) -> Any:
    """Patched arguments as the object ``input`` must be (a JSON string is parsed)."""
    return parse_arguments(arguments) if isinstance(arguments, str) else arguments


def _text_block(index: int, text: str) -> list[bytes]:
    """start, one delta, stop: the text block the API would stream."""
    return [
        _sse({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
        _sse({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}),
        _sse({"type": "content_block_stop", "index": index}),
    ]


def _message_head(model: str) -> Json:
    return {
        "id": "msg_01" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(22)),
        "type": "message",
        "role": "assistant",
        "model": model,
        "usage": {
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def _sse(event: Json) -> bytes:
    return encode_sse(orjson.dumps(event), event=event["type"])


def _block_type(block: Any) -> str | None:
    return block.get("type") if isinstance(block, dict) else None


def _is_tool_start(data: Json | None) -> bool:
    """A tool_use block starts: the decoder counts it as a tool call only with an int index."""
    if data is None or data.get("type") != "content_block_start":
        return False
    index = data.get("index")
    return (
        _block_type(data.get("content_block")) == "tool_use" and isinstance(index, int) and not isinstance(index, bool)
    )
