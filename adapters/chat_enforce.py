"""Policy verdicts applied to OpenAI Chat Completions replies (hop 6 of the design).

:class:`ChatEnforcer` implements :class:`adapters.edits.Enforcer` for
``/v1/chat/completions``. Whatever is edited, the client must still get a reply
its SDK accepts: a denied call leaves no gap in the ``index`` sequence the SDK
accumulates by, its refusal reaches the agent as assistant text, and a reply
whose every call was denied ends with ``finish_reason: "stop"`` so the agent
loop reads it as a final answer instead of waiting for tool results.

Refusal messages follow the assistant's own text as separate paragraphs
(joined by a blank line), in the order of the calls they replace.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from adapters.chat_stream import ChatStreamFilter
from adapters.chat_wire import PARAGRAPH, TOOL_FINISH, denial_text, encode, wire_arguments
from adapters.edits import ActionEdit, TextEdit
from adapters.model import Call
from adapters.openai_chat import is_custom_call

__all__ = ["ChatEnforcer", "ChatStreamFilter"]


class ChatEnforcer:
    """The Chat Completions :class:`~adapters.edits.Enforcer`; stateless, one serves every call."""

    api = "chat"

    def rewrite_response(self, body: dict[str, Any], edits: list[ActionEdit], text: TextEdit | None) -> dict[str, Any]:
        """``body`` with choice 0 edited and any other choice dropped; unchanged parts are
        shared with ``body``, never mutated, and ``body`` itself comes back when nothing changed.

        Raises ValueError when ``edits`` does not match the reply's tool calls one to one:
        that is a proxy bug, and guessing would either leak or drop a call.
        """
        sent = body.get("choices")
        if isinstance(sent, list) and len(sent) > 1:  # only choice 0 is judged (requests asking for n > 1 are
            body = {**body, "choices": sent[:1]}  # refused): the rest go, whatever they hold
        choices = sent if isinstance(sent, list) and sent and isinstance(sent[0], dict) else [{}]
        choice: dict[str, Any] = choices[0]
        message = choice.get("message")
        if not isinstance(message, dict):
            if edits:
                raise ValueError(f"{len(edits)} edits for a reply without tool calls")
            return body
        raw_calls = message.get("tool_calls")
        calls = raw_calls if isinstance(raw_calls, list) else []
        legacy = message.get("function_call")
        count = sum(isinstance(c, dict) for c in calls) + isinstance(legacy, dict)
        if len(edits) != count:
            raise ValueError(f"{len(edits)} edits for a reply with {count} tool calls")
        if text is None and all(edit.verdict == "allow" for edit in edits) and not any(map(_two_forms, calls)):
            return body

        new = dict(message)
        pending = iter(edits)
        refusals: list[str] = []
        kept: list[Any] = []
        for call in calls:
            if not isinstance(call, dict):
                kept.append(call)  # not a call the decoder saw; not ours to judge or drop
                continue
            edited = _edit_call(call, next(pending), refusals)
            if edited is not None:
                kept.append(edited)
        remaining = any(isinstance(c, dict) for c in kept)
        if kept:
            new["tool_calls"] = kept
        else:
            new.pop("tool_calls", None)
        if isinstance(legacy, dict):
            edited = _edit_call({"function": legacy}, next(pending), refusals)
            if edited is None:
                del new["function_call"]
            else:
                new["function_call"], remaining = edited["function"], True
        if text is not None:
            new["content"] = text.text
            if new.get("refusal") is not None:
                new["refusal"] = None  # the decoder reads refusal as assistant text too
        if refusals:
            new["content"] = _append_paragraphs(new.get("content"), refusals)
        new_choice = {**choice, "message": new}
        if count and not remaining and choice.get("finish_reason") in TOOL_FINISH:
            new_choice["finish_reason"] = "stop"
        return {**body, "choices": [new_choice]}

    def text_reply(self, call: Call, text: str) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None, "annotations": []}
        return {
            "id": "chatcmpl-" + uuid.uuid4().hex,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": call.model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            "system_fingerprint": None,
        }

    def text_reply_stream(self, call: Call, text: str) -> bytes:
        """Role, text, finish and (when the client asked for ``include_usage``) usage chunks."""
        options = call.params.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        base: dict[str, Any] = {"id": "chatcmpl-" + uuid.uuid4().hex, "object": "chat.completion.chunk"}
        base |= {"created": int(time.time()), "model": call.model, "system_fingerprint": None}
        if include_usage:
            base["usage"] = None  # as OpenAI does: null on every chunk but the last

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return encode({**base, "choices": [choice]})

        frames = [chunk({"role": "assistant", "content": "", "refusal": None})]
        if text:
            frames.append(chunk({"content": text}))
        frames.append(chunk({}, "stop"))
        if include_usage:
            usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
            frames.append(encode({**base, "choices": [], "usage": usage}))
        frames.append(b"data: [DONE]\n\n")
        return b"".join(frames)

    def stream_filter(self) -> ChatStreamFilter:
        return ChatStreamFilter()


def _two_forms(call: Any) -> bool:
    """A call a client could read as another than the one judged: both payloads, or a
    type its payload contradicts."""
    if not isinstance(call, dict):
        return False
    kind = "custom" if is_custom_call(call) else "function"
    return isinstance(call.get("custom" if kind == "function" else "function"), dict) or call.get("type", kind) != kind


def _as_judged(call: dict[str, Any]) -> dict[str, Any]:
    """``call`` in the form it was judged in only."""
    if not _two_forms(call):
        return call
    kind = "custom" if is_custom_call(call) else "function"
    return {**{k: v for k, v in call.items() if k != ("function" if kind == "custom" else "custom")}, "type": kind}


def _edit_call(call: dict[str, Any], edit: ActionEdit, refusals: list[str]) -> dict[str, Any] | None:
    """One non-streamed call after its verdict; None (and a refusal noted) when denied."""
    call = _as_judged(call)
    if edit.verdict == "allow":
        return call
    custom = call.get("custom") if call.get("type") == "custom" else None
    if edit.verdict == "deny":
        where = custom if isinstance(custom, dict) else call.get("function")
        name = where.get("name") if isinstance(where, dict) else None
        refusals.append(denial_text(edit, name if isinstance(name, str) else None))
        return None
    if isinstance(custom, dict):  # free-form input: a str is the input itself
        return {**call, "custom": {**custom, "input": wire_arguments(edit.arguments)}}
    function = call.get("function")
    function = function if isinstance(function, dict) else {}
    return {**call, "function": {**function, "arguments": wire_arguments(edit.arguments)}}


def _append_paragraphs(content: Any, paragraphs: list[str]) -> str:
    """A reply's content is a string or null (the SDK types say so); refusals follow it."""
    text = content if isinstance(content, str) else ""
    return PARAGRAPH.join([text, *paragraphs] if text else paragraphs)
