"""OpenAI Responses (``POST /v1/responses``) as trajectory events.

Only the items a client acts on become events: messages, ``function_call`` /
``custom_tool_call``, the calls of built-in tools the client runs (local shell,
shell, apply patch, computer) and their outputs. Reasoning, item references and hosted
tool calls (web search, file search, ...) run on the provider's side and are
skipped, in requests and responses alike, so a response and the next request
that re-sends it hash the same.
"""

from __future__ import annotations

from typing import Any

import orjson

from adapters.base import BadRequest
from adapters.common import (
    FREE_TEXT,
    ToolCallQueue,
    bad_role,
    continued,
    load_event,
    load_request,
    load_response,
    need_model,
    need_object,
    need_str,
    need_stream,
    optional_list,
    parse_arguments,
    session_metadata,
    str_or_none,
    text_pieces,
    usage_of,
)
from adapters.memo import MessageMemo, decode_with
from adapters.model import Call, EventKind, Listed, Reply, ToolSpec, TrajectoryEvent
from adapters.sse import SSEParser

_MEMO = MessageMemo()  # request items this process has decoded, by their bytes (adapters/memo.py)
_ROLES = ("user", "system", "developer", "assistant")
_KINDS = {
    "user": EventKind.USER,
    "system": EventKind.SYSTEM,
    "developer": EventKind.SYSTEM,
    "assistant": EventKind.ASSISTANT,
}
_CALLS = frozenset({"function_call", "custom_tool_call"})
_OUTPUTS = frozenset({"function_call_output", "custom_tool_call_output"})
# Built-in tools the client runs (not hosted ones): the call item's type -> (the tool's
# name in events and policies, the field that holds what to do, an object).
ACTION_CALLS = {
    "local_shell_call": ("local_shell", "action"),  # {"type": "exec", "command": [argv], ...}
    "shell_call": ("shell", "action"),  # {"commands": ["...", ...], ...}
    "apply_patch_call": ("apply_patch", "operation"),  # {"type": "update_file", "path", "diff"}
    "computer_call": ("computer", "action"),  # {"type": "click", "x", "y", ...}
}
_ACTION_OUTPUTS = frozenset(f"{kind}_output" for kind in ACTION_CALLS)
_ALL_CALLS = _CALLS | ACTION_CALLS.keys()
_NOT_PARAMS = frozenset(
    {"model", "input", "instructions", "tools", "stream", "previous_response_id", "conversation", "store"}
)
_FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


class ResponsesAdapter:
    """The Responses adapter; stateless, one instance serves every call."""

    api = "responses"
    history_field = "input"  # the list an agent re-sends with each call (adapters/resend.py)

    def decode_request(self, body: Any, prior: Call | None = None) -> Call:
        """``prior``: an earlier call whose input items this body's ``input`` continues
        (the body then holds only the items after them; adapters/resend.py)."""
        body = load_request(body)
        model = need_model(body)
        history: list[TrajectoryEvent] = []
        instructions = body.get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            raise BadRequest("'instructions' must be a string.", "invalid_type", "instructions")
        if instructions:
            history.append(TrajectoryEvent(kind=EventKind.SYSTEM, text=instructions, role="system"))
        items = body.get("input")
        listed = None
        if isinstance(items, str):
            history.append(TrajectoryEvent(kind=EventKind.USER, text=items, role="user"))
        elif isinstance(items, list):
            head = len(history)
            earlier, names, start = continued(prior, "input")  # names: call_id -> tool name, for the outputs that follow
            history += earlier
            for i, item in enumerate(items, start):
                history += decode_with(_MEMO, item, _inherited_name(item, names), names,
                                       lambda: _input_item(item, f"input[{i}]", names))  # noqa: B023 - called at once
            listed = Listed("input", head, start + len(items), names)
        elif items is not None or "prompt" not in body:  # a stored prompt may stand in for input
            code = "missing_field" if items is None else "invalid_type"
            raise BadRequest("'input' must be a string or an array of input items.", code, "input")
        return Call(
            api=self.api,
            model=model,
            stream=need_stream(body),
            history=tuple(history),
            tools=_tools(body),
            params={k: v for k, v in body.items() if k not in _NOT_PARAMS},
            previous_response_id=_optional_str(body, "previous_response_id"),
            conversation=_conversation(body.get("conversation")),
            store=_store(body.get("store")),
            metadata=session_metadata(body),
            listed=listed,
        )

    def decode_response(self, body: Any) -> Reply:
        data = load_response(body)
        if data is None:
            return Reply(events=())
        events: list[TrajectoryEvent] = []
        output = data.get("output")
        for item in output if isinstance(output, list) else ():
            if isinstance(item, dict):
                event = _item_event(item, {})
                if event is not None:
                    events.append(event)
        return Reply(
            events=tuple(events),
            usage=usage_of(data.get("usage"), "input_tokens", "output_tokens"),
            response_id=str_or_none(data.get("id")),
            model=str_or_none(data.get("model")),
            finish_reason=str_or_none(data.get("status")),
        )

    def stream_decoder(self) -> ResponsesStreamDecoder:
        return ResponsesStreamDecoder(self)

    def error_body(self, message: str, *, type: str, code: str, param: str | None = None) -> dict[str, Any]:
        return {"error": {"message": message, "type": type, "param": param, "code": code}}


def _check_item(item: Any, path: str) -> None:
    """Reject the input items the API itself would reject; unknown item types pass."""
    item = need_object(item, path, 'an input item such as {"role": "user", "content": "..."}')
    kind = item.get("type")
    if kind == "message" or (kind is None and "role" in item):
        if item.get("role") not in _KINDS:
            raise bad_role(path, item.get("role"), _ROLES)
        content = item.get("content")
        if content is None:
            raise BadRequest(f"'{path}.content' is required.", "missing_field", f"{path}.content")
        _text_parts(content, f"{path}.content", strict=True)
    elif kind in _CALLS:
        need_str(item, "call_id", path)
        need_str(item, "name", path)
        need_str(item, "arguments" if kind == "function_call" else "input", path)
    elif kind in _OUTPUTS:
        need_str(item, "call_id", path)
        output = item.get("output")
        if output is None:
            raise BadRequest(f"'{path}.output' is required.", "missing_field", f"{path}.output")
        _text_parts(output, f"{path}.output", strict=True)
    elif kind is None:
        raise BadRequest(
            f"'{path}.type' is required (e.g. \"message\" or \"function_call_output\") unless the item has a 'role'.",
            "missing_field",
            f"{path}.type",
        )
    elif not isinstance(kind, str):
        raise BadRequest(f"'{path}.type' must be a string.", "invalid_type", f"{path}.type")


def _input_item(item: Any, path: str, names: dict[str, str]) -> list[TrajectoryEvent]:
    """Validate one input item; its event, if it is a turn."""
    _check_item(item, path)
    event = _item_event(item, names)
    return [event] if event is not None else []


def _inherited_name(item: Any, names: dict[str, str]) -> str | None:
    """What a tool output's event takes from the call before it: the tool's name."""
    if isinstance(item, dict) and item.get("type") in _OUTPUTS and isinstance(item.get("call_id"), str):
        return names.get(item["call_id"])
    return None


def _item_event(item: dict[str, Any], names: dict[str, str]) -> TrajectoryEvent | None:
    """The event of one input or output item, or None for items that are not turns."""
    kind = item.get("type")
    if kind == "message" or (kind is None and "role" in item):
        role = str_or_none(item.get("role"))
        text = "".join(_text_parts(item.get("content"), "", strict=False))
        return TrajectoryEvent(kind=_KINDS.get(role or "", EventKind.USER), text=text, role=role)
    if kind in _ALL_CALLS:
        event = _call_event(item)
        if event.tool_name is not None and event.tool_call_id is not None:
            names[event.tool_call_id] = event.tool_name
        return event
    if kind in _OUTPUTS or kind in _ACTION_OUTPUTS:
        call_id = str_or_none(item.get("call_id"))
        if call_id is None and kind == "local_shell_call_output":  # it names its call by "id"
            call_id = str_or_none(item.get("id"))
        output = item.get("output")
        if kind in _ACTION_OUTPUTS and not isinstance(output, str):  # shell runs, screenshots: kept as JSON
            text = orjson.dumps(output).decode() if output is not None else ""
        else:
            text = "".join(_text_parts(output, "", strict=False))
        name = names.get(call_id) if call_id is not None else None
        return TrajectoryEvent(kind=EventKind.TOOL_RESULT, text=text, tool_name=name, tool_call_id=call_id)
    return None


def action_fields(item: dict[str, Any]) -> tuple[str, ...]:
    """The fields of a built-in tool's call that say what to do: a computer call may
    batch its steps in ``actions``, or carry both (the Agents SDK runs ``actions``)."""
    field = ACTION_CALLS[item["type"]][1]
    if field == "action" and "actions" in item:
        return ("action", "actions") if "action" in item else ("actions",)
    return (field,)


def action_arguments(item: dict[str, Any]) -> Any:
    """What a built-in call is judged by: its one action field, or all of them."""
    fields = action_fields(item)
    return item.get(fields[0]) if len(fields) == 1 else {f: item.get(f) for f in fields}


def _call_event(item: dict[str, Any]) -> TrajectoryEvent:
    action = ACTION_CALLS.get(item.get("type"))  # type: ignore[arg-type]
    if action is not None:  # a built-in tool: named by its type, judged by what it is told to do
        return TrajectoryEvent(
            kind=EventKind.TOOL_CALL,
            tool_name=action[0],
            arguments=action_arguments(item),
            tool_call_id=str_or_none(item.get("call_id")),
            labels={"builtin": item["type"]},
        )
    # function arguments are JSON; custom tool input is free text, kept raw and said to be text
    function = item.get("type") == "function_call"
    return TrajectoryEvent(
        kind=EventKind.TOOL_CALL,
        tool_name=str_or_none(item.get("name")),
        arguments=parse_arguments(item.get("arguments")) if function else item.get("input"),
        tool_call_id=str_or_none(item.get("call_id")),
        labels={} if function else dict(FREE_TEXT),
    )


def _text_parts(content: Any, path: str, *, strict: bool) -> list[str]:
    """Text pieces of a string or a list of content parts; other parts become placeholders."""
    return text_pieces(
        content, path, strict=strict, none_is_empty=False,
        text_keys={"input_text": "text", "output_text": "text", "text": "text", "refusal": "refusal"},
        part_shape='a content part such as {"type": "input_text", "text": "..."}',
    )


def _tools(body: dict[str, Any]) -> tuple[ToolSpec, ...]:
    specs: list[ToolSpec] = []
    for i, tool in enumerate(optional_list(body, "tools", "tool objects")):
        path = f"tools[{i}]"
        tool = need_object(tool, path, 'a tool such as {"type": "function", "name": "...", "parameters": {...}}')
        kind = need_str(tool, "type", path, 'a tool type such as "function"')
        if kind in ("function", "custom"):
            parameters = tool.get("parameters")
            if parameters is not None and not isinstance(parameters, dict):
                raise BadRequest(
                    f"'{path}.parameters' must be a JSON Schema object.", "invalid_type", f"{path}.parameters"
                )
            specs.append(
                ToolSpec(
                    name=need_str(tool, "name", path),
                    description=str_or_none(tool.get("description")),
                    parameters=parameters,
                )
            )
        else:  # hosted tools (web_search, file_search, mcp, ...) are named by their type
            specs.append(ToolSpec(name=kind))
    return tuple(specs)


def _optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"'{key}' must be a string.", "invalid_type", key)
    return value


def _conversation(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return str(value["id"])
    raise BadRequest(
        '\'conversation\' must be a conversation id or an object {"id": "conv_..."}.', "invalid_type", "conversation"
    )


def _store(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise BadRequest("'store' must be true or false.", "invalid_type", "store")


class ResponsesStreamDecoder:
    """Rebuilds a streamed response into the Reply its final response object would give.

    The terminal ``response.completed`` (or ``.incomplete`` / ``.failed``) event
    carries the whole response, and wins when present; otherwise the reply is
    pieced together from output items and their deltas. A tool call is complete
    at its ``response.output_item.done`` (or the terminal event), and
    :meth:`completed_tool_calls` returns each once, in output order.
    ``finished`` is True after a terminal event.
    """

    def __init__(self, adapter: ResponsesAdapter) -> None:
        self._adapter = adapter
        self._sse = SSEParser()
        self._queue = ToolCallQueue()
        self._items: dict[int, dict[str, Any]] = {}  # output_index -> item as last seen
        self._done: set[int] = set()  # output indexes whose item is final
        self._deltas: dict[tuple[int, int], list[str]] = {}  # (output_index, content_index) -> text
        self._arguments: dict[int, list[str]] = {}
        self._response: dict[str, Any] = {}  # the latest response snapshot (created / in_progress)
        self._final: dict[str, Any] | None = None
        self.finished = False

    def feed(self, chunk: bytes) -> None:
        for event in self._sse.feed(chunk):
            data = load_event(event.data)
            if data is not None:
                self._on_event(data)

    def completed_tool_calls(self) -> list[TrajectoryEvent]:
        return self._queue.drain()

    def reply(self) -> Reply:
        if self._final is not None:
            return self._adapter.decode_response(self._final)
        snapshot = dict(self._response)
        snapshot["output"] = [self._item(i) for i in sorted(self._items)]
        return self._adapter.decode_response(snapshot)

    def _on_event(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        index = data.get("output_index")
        if isinstance(index, int) and not isinstance(index, bool):
            self._on_item_event(kind, index, data)
        elif kind in _FINAL_EVENTS and isinstance(data.get("response"), dict):
            self._final = self._response = data["response"]
            self.finished = True
            output = self._final.get("output")
            for i, item in enumerate(output if isinstance(output, list) else ()):
                if isinstance(item, dict) and item.get("type") in _ALL_CALLS:
                    self._queue.complete(i, _call_event(item))
        elif isinstance(data.get("response"), dict):  # response.created / in_progress / queued
            self._response = data["response"]

    def _on_item_event(self, kind: Any, index: int, data: dict[str, Any]) -> None:
        if kind in ("response.output_item.added", "response.output_item.done"):
            item = data.get("item")
            if not isinstance(item, dict):
                return
            self._items[index] = item
            if kind.endswith("done"):
                self._done.add(index)
            if item.get("type") in _ALL_CALLS:
                if index in self._done:
                    self._queue.complete(index, _call_event(item))
                else:
                    self._queue.expect(index)
            return
        delta = data.get("delta")
        if kind in ("response.output_text.delta", "response.refusal.delta") and isinstance(delta, str):
            part = data.get("content_index")
            self._deltas.setdefault((index, part if isinstance(part, int) else 0), []).append(delta)
        elif kind in ("response.function_call_arguments.delta", "response.custom_tool_call_input.delta"):
            if isinstance(delta, str):
                self._arguments.setdefault(index, []).append(delta)
        elif kind == "response.function_call_arguments.done" and isinstance(data.get("arguments"), str):
            self._arguments[index] = [data["arguments"]]
        elif kind == "response.custom_tool_call_input.done" and isinstance(data.get("input"), str):
            self._arguments[index] = [data["input"]]

    def _item(self, index: int) -> dict[str, Any]:
        """The item at ``index`` with the deltas seen so far applied (unless it is final)."""
        item = self._items[index]
        if index in self._done:
            return item
        kind = item.get("type")
        if kind == "message":
            parts = sorted((c, "".join(t)) for (i, c), t in self._deltas.items() if i == index)
            return {**item, "content": [{"type": "output_text", "text": text} for _, text in parts]}
        if kind in _CALLS and index in self._arguments:
            return {**item, ("arguments" if kind == "function_call" else "input"): "".join(self._arguments[index])}
        return item
