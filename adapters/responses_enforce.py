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

import time
from typing import Any, Sequence

import orjson

from adapters.edits import ActionEdit, TextEdit
from adapters.model import Call, EventKind, TrajectoryEvent
from adapters.openai_responses import ResponsesAdapter
from adapters.responses_items import (
    Json,
    derived_id,
    edited,
    has_text,
    is_call,
    message_events,
    message_item,
    random_id,
    text_part,
)
from adapters.responses_stream import ResponsesStreamFilter
from adapters.sse import encode_sse


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
        calls = sum(1 for item in items if is_call(item))
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
                item, placed = {**item, "content": [text_part(text.text)]}, True
            elif is_call(item):
                if not placed and text is not None:  # the model said nothing before its first call
                    new.append(message_item(derived_id(f"{body.get('id')}|text"), text.text))
                    placed, said = True, bool(text.text)
                edit = next(verdicts)
                if edit.verdict != "allow":
                    item = edited(item, edit, said)
            new.append(item)
            said = said or has_text(item)
        if not placed and text is not None:
            new.append(message_item(derived_id(f"{body.get('id')}|text"), text.text))
        return {**body, "output": new}

    def text_reply(self, call: Call, text: str) -> Json:
        """A completed response whose only output is ``text``, with zero usage."""
        now = int(time.time())
        metadata = call.metadata.get("metadata")
        return {
            "id": random_id("resp_"),
            "object": "response",
            "created_at": now,
            "status": "completed",
            "background": False,
            "completed_at": now,
            "error": None,
            "incomplete_details": None,
            "instructions": None,
            "model": call.model,
            "output": [message_item(random_id("msg_"), text)],
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
            *message_events(0, done["output"][0]),
            {"type": "response.completed", "response": done},
        ]
        return b"".join(
            encode_sse(orjson.dumps({**event, "sequence_number": n}), event["type"]) for n, event in enumerate(events)
        )

    def stream_filter(self) -> ResponsesStreamFilter:
        return ResponsesStreamFilter(self._adapter)


# The output item that answers a denied call, by the call's kind (built-in tools'
# outputs need data no one has, a screenshot say: their calls are not answered).
_ANSWERS = {"function": "function_call_output", "custom": "custom_tool_call_output"}


def denied_answers(reply: Sequence[TrajectoryEvent]) -> list[tuple[str, str, str]]:
    """(call id, the output item type that answers it, why) of each call of a reply that
    was denied and that Proctor can answer (a built-in call's output needs data no one has)."""
    return [
        (ev.tool_call_id, _ANSWERS["custom" if ev.labels.get("free_text") else "function"],
         "; ".join(f"{d['rule']}: {d['message']}" for d in ev.labels["denied"]))
        for ev in reply
        if ev.kind is EventKind.TOOL_CALL and ev.labels.get("denied") and ev.tool_call_id and not ev.labels.get("builtin")
    ]


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
