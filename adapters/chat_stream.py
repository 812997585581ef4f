"""The Chat Completions stream filter (:class:`adapters.edits.StreamFilter`): text
flows as it arrives, each tool call is held until it is judged, and what goes on
is the call as judged, or the refusal that stands for it (see
:class:`ChatStreamFilter`)."""

from __future__ import annotations

import bisect
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from adapters.chat_wire import PARAGRAPH, TOOL_FINISH, TOOL_KEYS, denial_text, encode, wire_arguments
from adapters.common import load_event
from adapters.edits import ALLOW, ActionEdit
from adapters.model import TrajectoryEvent
from adapters.openai_chat import ChatStreamDecoder
from adapters.sse import SSEParser

# A blank line ends an SSE event; lines end in "\r\n", "\n" or a lone "\r".
_EVENT_END = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r(?!\n)|\n)")


@dataclass(slots=True, eq=False)
class _HeldCall:
    """The events of one streamed tool call (by its upstream ``index``), held until judged.

    ``entries`` are ``(raw, chunk, pieces)``: the original event bytes when the
    event belonged to this call alone (None when it was split out of a shared
    event), the parsed chunk, and this call's ``tool_calls`` pieces in it.
    """

    index: int
    entries: list[tuple[bytes | None, dict[str, Any], list[dict[str, Any]]]] = field(default_factory=list)
    complete: bool = False
    legacy: bool = False  # streamed as the pre-tools `function_call` delta
    event: TrajectoryEvent | None = None
    named: int = 0  # pieces that carried a name or an id: more than one, and the call is released named once
    forms: set[str] = field(default_factory=set)  # "type:..." and payload keys seen: more than one form, and
    # the call is released in the form judged only


@dataclass(slots=True, eq=False)
class _Finish:
    """An event that ends choice 0 for tool calls; it reads "stop" on release if no call was kept."""

    raw: bytes
    data: dict[str, Any]


_Item = bytes | _HeldCall | _Finish
_Piece = tuple[dict[str, Any], bool]  # a `tool_calls` piece, and whether it came as a legacy `function_call`


class ChatStreamFilter:
    """The Chat :class:`~adapters.edits.StreamFilter`.

    Events that carry no tool-call data for choice 0 are queued as their
    original bytes the moment their blank line arrives; most are recognised by
    a few substring tests without parsing JSON. Tool-call events are parsed,
    held per call and handed to the decoder, whose completion rule decides when
    a call goes to the proxy. Calls are released in the order they are judged
    (index order), renumbered 0..k-1 over the calls kept.

    Only choice 0 is enforced, as only choice 0 is decoded into the trajectory;
    other choices are dropped (requests for more than one are refused, so any
    other choice is something the policy never saw).
    """

    __slots__ = (
        "_buf", "_calls", "_crlf", "_decoder", "_done", "_envelope", "_items", "_kept", "_open", "_pending", "_sse",
        "_text_seen",
    )

    def __init__(self) -> None:
        self._buf = bytearray()  # bytes of an unfinished event
        self._crlf = False  # a "\r" was seen: find event ends with the full rule, not just "\n\n"
        self._sse = SSEParser()
        self._decoder = ChatStreamDecoder()
        self._items: deque[_Item] = deque()  # what goes out, in order; a _HeldCall waits for decide()
        self._calls: dict[int, _HeldCall] = {}
        self._open: list[int] = []  # indexes of calls not yet complete, sorted as the decoder hands them out
        self._pending: _HeldCall | None = None
        self._kept = 0  # calls released so far: the next kept call's index
        self._text_seen = False  # the client has (or will have) text: refusals start a new paragraph
        self._envelope: dict[str, Any] = {}  # id, model, created... for the chunks this filter writes
        self._done = False  # [DONE] went by: SDKs read nothing after it, and nothing after it is judged

    def feed(self, chunk: bytes) -> None:
        buf = self._buf
        scan = max(0, len(buf) - 3)
        buf += chunk
        if not self._crlf and b"\r" in chunk:
            self._crlf = True
        pos = 0
        if self._crlf:
            for match in _EVENT_END.finditer(buf, scan):
                self._on_event(bytes(buf[pos : match.end()]))
                pos = match.end()
        else:
            end = buf.find(b"\n\n", scan)
            while end >= 0:
                self._on_event(bytes(buf[pos : end + 2]))
                pos = end + 2
                end = buf.find(b"\n\n", pos)
        if pos:
            del buf[:pos]

    def next(self) -> bytes | TrajectoryEvent | None:
        if self._pending is not None:
            return None
        items = self._items
        out: list[bytes] = []  # consecutive bytes leave as one write
        while items:
            item = items[0]
            if isinstance(item, _HeldCall):
                if out:
                    break
                items.popleft()
                self._pending = item
                return item.event
            items.popleft()
            out.append(item if isinstance(item, bytes) else self._finish_bytes(item))
        if not out:
            return None
        return out[0] if len(out) == 1 else b"".join(out)

    def decide(self, edit: ActionEdit) -> None:
        call = self._pending
        if call is None:
            raise RuntimeError("decide() was called with no tool call awaiting a decision")
        self._pending = None
        self._items.extendleft(reversed(self._release(call, edit)))

    def close(self) -> None:
        """Release everything as the model sent it, renumbered after earlier denials."""
        released: list[bytes] = []
        if self._pending is not None:
            released += self._release(self._pending, ALLOW)
            self._pending = None
        items: deque[_Item] = deque(released)
        for item in self._items:
            items.extend(self._release(item, ALLOW) if isinstance(item, _HeldCall) else (item,))
        for index in self._open:
            items.extend(self._release(self._calls[index], ALLOW))
        self._open = []
        if self._buf:
            items.append(bytes(self._buf))
            self._buf.clear()
        self._items = items

    # ---- internals ----

    def _on_event(self, raw: bytes) -> None:
        if self._done:
            return
        if (
            self._text_seen
            and b'"tool_calls"' not in raw
            and b'"function_call"' not in raw
            and b"[DONE]" not in raw
            and b"\\u" not in raw  # an escaped key could hide "tool_calls" from the tests above
            and raw.count(b'"finish_reason"') == raw.count(b'"finish_reason":null')
            and raw.count(b'"index"') <= 1 and b'"index":0' in raw  # another choice is never passed on
        ):
            self._items.append(raw)  # text (or usage): nothing for the decoder to complete
            return
        events = self._sse.feed(raw)
        if events and events[0].data == "[DONE]":
            self._done = True
        data = load_event(events[0].data) if events else None
        pieces: list[_Piece] = []
        trimmed = False
        if data is not None:
            if not self._envelope:
                self._envelope = {k: v for k, v in data.items() if k != "choices"}
                if "usage" in self._envelope:
                    self._envelope["usage"] = None
            only = _sanitized(data)
            if only is not data:  # another choice, or a piece no index places: nothing the policy saw
                data, trimmed = only, True
                if not data["choices"] and data.get("usage") is None:
                    self._decoder.feed(raw)
                    return
            pieces = self._scan(data)
        remainder: dict[str, Any] | None = data
        if pieces:
            assert data is not None
            remainder = self._hold(encode(data) if trimmed else raw, data, pieces)
        self._decoder.feed(raw)
        for event in self._decoder.completed_tool_calls():
            call = self._calls[self._open.pop(0)]
            call.complete, call.event = True, event
            self._items.append(call)
        if remainder is None:
            if not pieces:  # not JSON: a comment, [DONE] or junk goes on as it came
                self._items.append(raw)
            return
        out = raw if remainder is data and not trimmed else encode(remainder)
        if _ends_for_tools(remainder):
            self._items.append(_Finish(out, remainder))
        else:
            self._items.append(out)

    def _scan(self, data: dict[str, Any]) -> list[_Piece]:
        """Choice 0's tool-call pieces, read exactly as the decoder reads them; notes text."""
        choices = data.get("choices")
        found: list[_Piece] = []
        if not isinstance(choices, list):
            return found
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                continue
            if isinstance(delta.get("content"), str) and delta["content"]:
                self._text_seen = True
            if isinstance(delta.get("function_call"), dict):
                found.append(({"index": 0, "function": delta["function_call"]}, True))
                continue
            tool_calls = delta.get("tool_calls")
            if isinstance(tool_calls, list):
                found += [(p, False) for p in tool_calls if isinstance(p, dict) and isinstance(p.get("index"), int)]
        return found

    def _hold(self, raw: bytes, data: dict[str, Any], pieces: list[_Piece]) -> dict[str, Any] | None:
        """File the pieces under their calls; return what of the event goes on now, if anything.

        Pieces for a call that is already complete are dropped: they would change
        arguments the policy has already judged.
        """
        by_index: dict[int, list[dict[str, Any]]] = {}
        for piece, legacy in pieces:
            index = piece["index"]
            call = self._calls.get(index)
            if call is None:
                call = self._calls[index] = _HeldCall(index)
                bisect.insort(self._open, index)
            call.legacy = call.legacy or legacy
            call.named += _names_call(piece)
            call.forms |= _forms(piece)
            if not call.complete:
                by_index.setdefault(index, []).append(piece)
        choices = data["choices"]
        if len(by_index) == 1 and len(pieces) == len(next(iter(by_index.values()))) and len(choices) == 1:
            if choices[0].get("finish_reason") is None:  # the usual case: the event is this call's alone
                index, mine = next(iter(by_index.items()))
                self._calls[index].entries.append((raw, data, mine))
                return None
        base = {**data, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": None}]}
        if base.get("usage") is not None:
            base["usage"] = None
        for index, mine in by_index.items():
            self._calls[index].entries.append((None, base, mine))
        return _without_tools(data)

    def _release(self, call: _HeldCall, edit: ActionEdit) -> list[bytes]:
        """The bytes that stand for ``call`` once judged."""
        entries, call.entries = call.entries, []
        if edit.verdict == "deny":
            out = [encode(kept) for _, data, _ in entries if (kept := _with_pieces(data, [], call.legacy))]
            name = call.event.tool_name if call.event is not None else None
            separator = PARAGRAPH if self._text_seen else ""
            self._text_seen = True
            delta = {"content": separator + denial_text(edit, name)}
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
            out.append(encode({**self._envelope, "choices": [choice]}))
            return out
        index, self._kept = self._kept, self._kept + 1
        reshaped = call.event is not None and (call.named > 1 or not _one_form(call.forms, call.event))
        if (edit.verdict == "allow" and index == call.index and not reshaped
                and all(raw is not None for raw, _, _ in entries)):
            return [raw for raw, _, _ in entries if raw is not None]
        arguments = wire_arguments(edit.arguments) if edit.verdict == "patch" else None
        out = []
        for _, data, pieces in entries:
            new: list[dict[str, Any]] = []
            for piece in pieces:
                piece = {**piece, "index": index}
                if reshaped:
                    assert call.event is not None
                    piece = _as_judged(piece, not new and not out, call.event)
                if arguments is not None:  # the whole new arguments ride on the call's first piece
                    function = piece.get("function")
                    function = dict(function) if isinstance(function, dict) else {}
                    function.pop("arguments", None)
                    if not new and not out:
                        function["arguments"] = arguments
                    piece["function"] = function
                    if not function and piece.keys() <= {"index", "function"}:
                        continue
                new.append(piece)
            if (encoded := _with_pieces(data, new, call.legacy)) is not None:
                out.append(encode(encoded))
        return out

    def _finish_bytes(self, item: _Finish) -> bytes:
        if self._kept or not self._calls:
            return item.raw
        choices = [
            {**c, "finish_reason": "stop"} if isinstance(c, dict) and c.get("index", 0) == 0 else c
            for c in item.data["choices"]
        ]
        return encode({**item.data, "choices": choices})


def _sanitized(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with only choice 0, and without tool-call pieces that no integer index
    places (the decoder skips them; SDKs would read ``"0"`` or ``null`` as a call);
    ``data`` itself when there is nothing to take out."""
    choices = data.get("choices")
    if not isinstance(choices, list):
        return data
    kept = [c for c in choices if isinstance(c, dict) and c.get("index", 0) == 0]
    changed = len(kept) != len(choices)
    for i, choice in enumerate(kept):
        delta = choice.get("delta")
        if isinstance(delta, dict) and "tool_calls" in delta and "function_call" in delta:  # the decoder reads
            delta = {k: v for k, v in delta.items() if k != "function_call"}  # tool_calls: the legacy field goes
            kept[i] = choice = {**choice, "delta": delta}
            changed = True
        pieces = delta.get("tool_calls") if isinstance(delta, dict) else None
        if isinstance(pieces, list) and not all(isinstance(p, dict) and type(p.get("index")) is int for p in pieces):
            placed = [p for p in pieces if isinstance(p, dict) and type(p.get("index")) is int]
            rest = {k: v for k, v in delta.items() if k != "tool_calls"}
            kept[i] = {**choice, "delta": {**rest, "tool_calls": placed} if placed else rest}
            changed = True
    return {**data, "choices": kept} if changed else data


def _forms(piece: dict[str, Any]) -> set[str]:
    kind = piece.get("type")
    return {*(k for k in ("function", "custom") if isinstance(piece.get(k), dict)), *((f"type:{kind}",) if kind else ())}


def _judged_kind(event: TrajectoryEvent) -> str:
    return "custom" if event.labels.get("free_text") else "function"


def _one_form(forms: set[str], event: TrajectoryEvent) -> bool:
    """The pieces agree with each other and with the form the call was judged in."""
    kind = _judged_kind(event)
    return forms <= {kind, f"type:{kind}"}


def _names_call(piece: dict[str, Any]) -> int:
    """1 when a tool-call piece carries the call's id or (part of) its name."""
    if piece.get("id"):
        return 1
    return int(any(isinstance(inner, dict) and inner.get("name") for inner in (piece.get("function"), piece.get("custom"))))


def _as_judged(piece: dict[str, Any], first: bool, event: TrajectoryEvent) -> dict[str, Any]:
    """A piece of a call whose name or id came in several pieces (the OpenAI SDK joins
    them, other clients keep the first or the last), or whose type and payloads
    disagree (SDKs go by the type, LangChain by the function object): the call goes
    on in the form judged only, its first piece carrying the whole name and id the
    policy judged and later pieces neither, so every client reads the same call."""
    kind = _judged_kind(event)
    other = "function" if kind == "custom" else "custom"
    piece = {k: v for k, v in piece.items() if k not in ("id", other)}
    if "type" in piece:
        piece["type"] = kind
    if isinstance(piece.get(kind), dict):
        piece[kind] = {k: v for k, v in piece[kind].items() if k != "name"}
    if first:
        piece[kind] = {**(piece.get(kind) or {}), "name": event.tool_name}
        if event.tool_call_id is not None:
            piece["id"] = event.tool_call_id
    return piece


def _with_pieces(data: dict[str, Any], pieces: list[dict[str, Any]], legacy: bool) -> dict[str, Any] | None:
    """A held chunk (one choice) carrying ``pieces`` as its tool data; None when nothing is left."""
    choice = data["choices"][0]
    delta = {k: v for k, v in choice["delta"].items() if k not in TOOL_KEYS}
    if pieces:
        if legacy:
            delta["function_call"] = pieces[0].get("function", {})
        else:
            delta["tool_calls"] = pieces
    elif not delta:
        return None
    return {**data, "choices": [{**choice, "delta": delta}]}


def _without_tools(data: dict[str, Any]) -> dict[str, Any] | None:
    """``data`` with choice 0's tool data removed; None when nothing else was in it."""
    keep = data.get("usage") is not None
    choices: list[Any] = []
    for choice in data["choices"]:
        if isinstance(choice, dict) and choice.get("index", 0) == 0 and isinstance(choice.get("delta"), dict):
            delta = {k: v for k, v in choice["delta"].items() if k not in TOOL_KEYS}
            choice = {**choice, "delta": delta}
            keep = keep or bool(delta) or choice.get("finish_reason") is not None
        else:
            keep = True
        choices.append(choice)
    return {**data, "choices": choices} if keep else None


def _ends_for_tools(data: dict[str, Any]) -> bool:
    choices = data.get("choices")
    return isinstance(choices, list) and any(
        isinstance(c, dict) and c.get("index", 0) == 0 and c.get("finish_reason") in TOOL_FINISH for c in choices
    )
