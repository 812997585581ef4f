"""Response output items as the Responses enforcer and its stream filter edit them:
which items are tool calls, how a call is found again, and what stands where a
call was (itself with new arguments, or a message saying why it is gone)."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import orjson

from adapters.common import str_or_none
from adapters.edits import ActionEdit
from adapters.openai_responses import ACTION_CALLS, action_fields

Json = dict[str, Any]

# The Responses adapter's own sets, so both judge the same items.
CALLS = frozenset({"function_call", "custom_tool_call", *ACTION_CALLS})
FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
TEXT_DELTAS = frozenset({"response.output_text.delta", "response.refusal.delta"})
ADDED = "response.output_item.added"
DONE = "response.output_item.done"
# Per call item type: the field that holds its arguments, and the events that stream it.
WIRE = {
    "function_call": ("arguments", "response.function_call_arguments.delta", "response.function_call_arguments.done"),
    "custom_tool_call": ("input", "response.custom_tool_call_input.delta", "response.custom_tool_call_input.done"),
}




def is_call(item: Any) -> bool:
    return isinstance(item, dict) and item.get("type") in CALLS


def identity(item: Json) -> str | None:
    return str_or_none(item.get("call_id")) or str_or_none(item.get("id"))


def position(output: list[Any], index: int, ids: str | None) -> int | None:
    """Where the call streamed at ``index`` sits in a response's output: at the same
    index normally, found by its ids if the list is laid out differently."""
    if index < len(output) and is_call(output[index]) and identity(output[index]) == ids:
        return index
    if ids is None:
        return None
    return next((i for i, x in enumerate(output) if is_call(x) and identity(x) == ids), None)


def edited(item: Json, edit: ActionEdit, after_text: bool) -> Json:
    """What stands where call ``item`` was: itself with new arguments, or a message
    saying why it is gone. Any verdict but allow and patch denies (fail closed)."""
    if edit.verdict == "patch" and item["type"] in ACTION_CALLS:  # a built-in tool's action, an object
        fields = action_fields(item)
        if len(fields) == 1:
            return {**item, fields[0]: edit.arguments}
        patch = edit.arguments if isinstance(edit.arguments, dict) else {}
        return {**{k: v for k, v in item.items() if k not in fields}, **{f: patch[f] for f in fields if f in patch}}
    if edit.verdict == "patch":
        key = WIRE[item["type"]][0]
        arguments = edit.arguments
        # function arguments are a JSON string; custom tool input is free text
        if not (item["type"] == "custom_tool_call" and isinstance(arguments, str)):
            arguments = orjson.dumps(arguments).decode()
        return {**item, key: arguments}
    message = edit.message if edit.message is not None else f"The call to {item.get('name') or ACTION_CALLS.get(item['type'], ('a tool',))[0]} was denied by policy."
    return message_item(derived_id(f"{item.get('id')}|{item.get('call_id')}"), f"\n\n{message}" if after_text else message)


def text_part(text: str) -> Json:
    return {"type": "output_text", "text": text, "annotations": []}


def message_item(item_id: str, text: str) -> Json:
    return {"id": item_id, "type": "message", "status": "completed", "role": "assistant", "content": [text_part(text)]}


def has_text(item: Any) -> bool:
    content = item.get("content") if isinstance(item, dict) and item.get("type") == "message" else None
    if isinstance(content, str):
        return bool(content)
    parts = content if isinstance(content, list) else ()
    return any(isinstance(p, dict) and (p.get("text") or p.get("refusal")) for p in parts)


def derived_id(seed: str) -> str:
    return "msg_" + hashlib.blake2b(seed.encode(), digest_size=24).hexdigest()


def random_id(prefix: str) -> str:
    return prefix + (uuid.uuid4().hex + uuid.uuid4().hex)[:48]


def message_events(index: int, item: Json) -> list[Json]:
    """The events that stream message ``item`` (one text part) at ``index``."""
    where = {"item_id": item["id"], "output_index": index, "content_index": 0}
    part = item["content"][0]
    return [
        {"type": ADDED, "output_index": index, "item": {**item, "status": "in_progress", "content": []}},
        {"type": "response.content_part.added", **where, "part": {**part, "text": ""}},
        {"type": "response.output_text.delta", **where, "delta": part["text"], "logprobs": []},
        {"type": "response.output_text.done", **where, "text": part["text"], "logprobs": []},
        {"type": "response.content_part.done", **where, "part": part},
        {"type": DONE, "output_index": index, "item": item},
    ]
