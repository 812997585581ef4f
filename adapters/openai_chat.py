"""OpenAI Chat Completions (``POST /v1/chat/completions``) as trajectory events.

Requests are checked strictly enough to answer with a useful 400; responses and
streams are read leniently, because what upstream sent has to be recorded even
when it is odd. The assistant message of a response, the same message re-sent
by the client in the next request, and the same response streamed all go
through :func:`_assistant_events`, so their events (and hashes) agree.
"""

from __future__ import annotations

from typing import Any

import orjson

from adapters.base import BadRequest
from adapters.common import (
    FREE_TEXT,
    MessageEvents,
    ToolCallQueue,
    bad_role,
    continued,
    load_event,
    load_request,
    load_response,
    need_list,
    need_model,
    need_object,
    need_str,
    need_stream,
    optional_list,
    optional_objects,
    parse_arguments,
    session_metadata,
    str_or_none,
    text_pieces,
    usage_of,
)
from adapters.memo import MessageMemo, decode_with
from adapters.model import Call, EventKind, Listed, Reply, ToolSpec, TrajectoryEvent, Usage
from adapters.sse import SSEParser

_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_KINDS = {"system": EventKind.SYSTEM, "developer": EventKind.SYSTEM, "user": EventKind.USER}
_NOT_PARAMS = frozenset({"model", "messages", "tools", "functions", "stream"})
_MEMO = MessageMemo()  # messages this process has decoded, by their bytes (adapters/memo.py)
_OBJECT_PARAMS = ("stream_options", "metadata", "response_format", "logit_bias", "prediction", "audio", "web_search_options")
_TOOL_SHAPE = 'an object such as {"type": "function", "function": {"name": "...", "parameters": {...}}}'


class ChatAdapter:
    """The Chat Completions adapter; stateless, one instance serves every call."""

    api = "chat"
    history_field = "messages"  # the list an agent re-sends with each call (adapters/resend.py)

    def decode_request(self, body: Any, prior: Call | None = None) -> Call:
        """``prior``: an earlier call whose messages this body's ``messages`` continue
        (the body then holds only the messages after them; adapters/resend.py)."""
        body = load_request(body)
        model = need_model(body)
        messages = need_list(body, "messages", 'message objects such as {"role": "user", "content": "..."}')
        optional_objects(body, _OBJECT_PARAMS)
        history, names, start = continued(prior, "messages")
        for i, message in enumerate(messages, start):
            history += decode_with(
                _MEMO, message, _inherited_name(message, names), names,
                lambda: _request_message(message, f"messages[{i}]", names),  # noqa: B023 - called at once
            )
        return Call(
            api=self.api,
            model=model,
            stream=need_stream(body),
            history=tuple(history),
            tools=_tools(body),
            params={k: v for k, v in body.items() if k not in _NOT_PARAMS},
            metadata=session_metadata(body),
            listed=Listed("messages", 0, start + len(messages), names),
        )

    def decode_response(self, body: Any) -> Reply:
        data = load_response(body)
        if data is None:
            return Reply(events=())
        events: list[TrajectoryEvent] = []
        choices = data.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        message = choice.get("message")
        if isinstance(message, dict):
            _assistant_events(message, events)
        return Reply(
            events=tuple(events),
            usage=usage_of(data.get("usage"), "prompt_tokens", "completion_tokens"),
            response_id=str_or_none(data.get("id")),
            model=str_or_none(data.get("model")),
            finish_reason=str_or_none(choice.get("finish_reason")),
        )

    def stream_decoder(self) -> ChatStreamDecoder:
        return ChatStreamDecoder()

    def error_body(self, message: str, *, type: str, code: str, param: str | None = None) -> dict[str, Any]:
        return {"error": {"message": message, "type": type, "param": param, "code": code}}


def _inherited_name(message: Any, names: dict[str, str]) -> str | None:
    """What a tool result's event takes from the call before it: the tool's name."""
    if isinstance(message, dict) and message.get("role") == "tool" and isinstance(message.get("tool_call_id"), str):
        return names.get(message["tool_call_id"])
    return None


def _request_message(message: Any, path: str, names: dict[str, str]) -> list[TrajectoryEvent]:
    """Validate one request message; its events."""
    out: list[TrajectoryEvent] = []
    message = need_object(message, path, 'a message object such as {"role": "user", "content": "..."}')
    role = message.get("role")
    if role == "assistant":
        _text_parts(message.get("content"), f"{path}.content", strict=True)
        tool_calls = message.get("tool_calls")
        if tool_calls is not None and not isinstance(tool_calls, list):
            raise BadRequest(
                f"'{path}.tool_calls' must be an array of tool calls.", "invalid_type", f"{path}.tool_calls"
            )
        for j, call in enumerate(tool_calls or ()):
            _check_tool_call(call, f"{path}.tool_calls[{j}]")
        start = len(out)
        _assistant_events(message, out)
        for event in out[start:]:
            if event.tool_call_id is not None and event.tool_name is not None:
                names[event.tool_call_id] = event.tool_name
    elif role in _KINDS:
        content = message.get("content")
        if content is None:
            raise BadRequest(f"'{path}.content' is required.", "missing_field", f"{path}.content")
        text = "".join(_text_parts(content, f"{path}.content", strict=True))
        out.append(TrajectoryEvent(kind=_KINDS[role], text=text, role=role))
    elif role == "tool":
        call_id = need_str(message, "tool_call_id", path)
        text = "".join(_text_parts(message.get("content"), f"{path}.content", strict=True))
        out.append(
            TrajectoryEvent(
                kind=EventKind.TOOL_RESULT, text=text, tool_name=names.get(call_id), tool_call_id=call_id, role=role
            )
        )
    elif role == "function":  # legacy: the result of a `function_call`, named rather than id'd
        name = need_str(message, "name", path)
        text = "".join(_text_parts(message.get("content"), f"{path}.content", strict=True))
        out.append(TrajectoryEvent(kind=EventKind.TOOL_RESULT, text=text, tool_name=name, role=role))
    else:
        raise bad_role(path, role, _ROLES)
    return out


def _text_parts(content: Any, path: str, *, strict: bool) -> list[str]:
    """The text pieces of ``content`` (a string or content parts); non-text parts as placeholders."""
    return text_pieces(
        content, path, strict=strict, text_keys={"text": "text", "refusal": "refusal"},
        part_shape='a content part such as {"type": "text", "text": "..."}',
    )


def _check_tool_call(call: Any, path: str) -> None:
    call = need_object(call, path, 'a tool call such as {"id": "...", "type": "function", "function": {...}}')
    if call.get("type") == "custom":
        need_str(need_object(call.get("custom"), f"{path}.custom", "an object with 'name' and 'input'"), "name", path)
        return
    function = need_object(call.get("function"), f"{path}.function", "an object with 'name' and 'arguments'")
    need_str(function, "name", f"{path}.function")


def _assistant_events(message: dict[str, Any], out: list[TrajectoryEvent]) -> None:
    """Text first (content, then any refusal), then one TOOL_CALL per tool call, in order."""
    events = MessageEvents(out, EventKind.ASSISTANT, "assistant")
    for text in _text_parts(message.get("content"), "", strict=False):
        events.text(text)
    refusal = message.get("refusal")
    if isinstance(refusal, str):
        events.text(refusal)
    tool_calls = message.get("tool_calls")
    if isinstance(tool_calls, list):
        for call in tool_calls:
            if isinstance(call, dict):
                events.event(_tool_call_event(call))
    function_call = message.get("function_call")
    if isinstance(function_call, dict):
        events.event(_tool_call_event({"function": function_call}))
    events.close()


def is_custom_call(call: dict[str, Any]) -> bool:
    """A call is a custom tool's when its type says so and it carries a custom object,
    or it carries only that; a function object is read as a function whatever the
    type says, as LangChain reads it (the enforcer sends such a call on in one form)."""
    custom, function = isinstance(call.get("custom"), dict), isinstance(call.get("function"), dict)
    return custom and (call.get("type") == "custom" or not function)


def _tool_call_event(call: dict[str, Any]) -> TrajectoryEvent:
    labels: dict[str, Any] = {}
    if is_custom_call(call):  # free-form input: kept as the raw string, and said to be text
        custom = call.get("custom")
        custom = custom if isinstance(custom, dict) else {}
        name, arguments, labels = custom.get("name"), custom.get("input"), dict(FREE_TEXT)
    else:
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        name, arguments = function.get("name"), parse_arguments(function.get("arguments"))
    return TrajectoryEvent(
        kind=EventKind.TOOL_CALL,
        tool_name=str_or_none(name),
        arguments=arguments,
        tool_call_id=str_or_none(call.get("id")),
        labels=labels,
        role="assistant",
    )


def _tools(body: dict[str, Any]) -> tuple[ToolSpec, ...]:
    """``tools``, plus the legacy ``functions`` list, as ToolSpecs (hosted tool types named by type)."""
    specs: list[ToolSpec] = []
    for i, tool in enumerate(optional_list(body, "tools", "tool objects")):
        path = f"tools[{i}]"
        tool = need_object(tool, path, _TOOL_SHAPE)
        kind = tool.get("type")
        if kind == "function":
            specs.append(_function_spec(tool.get("function"), f"{path}.function"))
        elif kind == "custom":
            custom = need_object(tool.get("custom"), f"{path}.custom", "an object with a 'name'")
            specs.append(
                ToolSpec(
                    name=need_str(custom, "name", f"{path}.custom"), description=str_or_none(custom.get("description"))
                )
            )
        elif isinstance(kind, str):
            specs.append(ToolSpec(name=kind))
        else:
            need_str(tool, "type", path, 'a tool type such as "function"')
    for i, function in enumerate(optional_list(body, "functions", "function definitions")):
        specs.append(_function_spec(function, f"functions[{i}]"))
    return tuple(specs)


def _function_spec(function: Any, path: str) -> ToolSpec:
    function = need_object(function, path, "an object with 'name', 'description' and 'parameters'")
    name = need_str(function, "name", path)
    parameters = function.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise BadRequest(f"'{path}.parameters' must be a JSON Schema object.", "invalid_type", f"{path}.parameters")
    return ToolSpec(name=name, description=str_or_none(function.get("description")), parameters=parameters)


class _PartialCall:
    """One streamed tool call, gathered as the OpenAI SDK gathers it: strings joined,
    ``type`` the last one sent, and a function's and a custom tool's fields apart."""

    __slots__ = ("closed", "function", "function_data", "custom", "custom_data", "id", "type")

    def __init__(self) -> None:
        self.id: str | None = None
        self.type: str | None = None
        self.function: list[str | None] = [None]  # [name], then argument JSON pieces
        self.custom: list[str | None] = [None]  # [name], then free-text input pieces
        self.function_data = False  # a function object was sent
        self.custom_data = False
        self.closed = False

    @property
    def is_custom(self) -> bool:
        """Read by its type when the type and the payload agree; else by the payload it
        carries (LangChain runs a function object whatever the type says). The stream
        filter sends the call on in the form judged, so no client reads another."""
        if self.type == "custom" and self.custom_data:
            return True
        if self.type == "function" and self.function_data:
            return False
        return self.custom_data and not self.function_data

    @property
    def mixed(self) -> bool:
        """Its type and payloads disagree, or it carried both payloads."""
        return (self.custom_data and self.function_data) or (self.type not in (None, "custom" if self.is_custom else "function"))

    def as_wire(self) -> dict[str, Any]:
        name, *text = self.custom if self.is_custom else self.function
        joined = "".join(piece for piece in text if piece is not None)
        if self.is_custom:
            return {"id": self.id, "type": "custom", "custom": {"name": name, "input": joined}}
        return {"id": self.id, "type": "function", "function": {"name": name, "arguments": joined}}

    def add(self, parts: list[str | None], data: dict[str, Any], text_key: str, repeat: bool) -> None:
        if isinstance(data.get("name"), str) and data["name"]:
            parts[0] = _joined(parts[0], data["name"], repeat)
        text = data.get(text_key)
        if isinstance(text, str):
            parts.append(text)
        elif text is not None:  # an object sent as is (the SDK hands it over as is): judged as its JSON
            parts.append(orjson.dumps(text).decode())


def _joined(current: str | None, piece: str, repeat: bool = False) -> str:
    """A tool call's name or id streamed in several pieces, joined as the OpenAI SDK
    and LangChain join them; a piece equal to the value so far, in a delta that
    repeats the call's id too, is a repeat (some servers send both in every delta).
    (The stream filter then sends the call on with its name and id once, as judged.)"""
    return piece if current is None or (repeat and piece == current) else current + piece


class ChatStreamDecoder:
    """Rebuilds choice 0 of a streamed completion into the Reply the JSON body would give.

    :meth:`completed_tool_calls` returns each tool call once, in index order, as
    soon as it is complete: when a ``finish_reason`` or ``[DONE]`` arrives, or
    when a later tool call starts and this one's arguments already parse as JSON
    (OpenAI streams parallel calls one after another). A stream cut before any
    of these leaves its last call incomplete. ``finished`` is True after ``[DONE]``
    or a ``finish_reason`` (some servers send no ``[DONE]``; the SDKs need none).
    """

    def __init__(self) -> None:
        self._sse = SSEParser()
        self._queue = ToolCallQueue()
        self._calls: dict[int, _PartialCall] = {}
        self._text: list[str] = []
        self._refusal: list[str] = []
        self._seen_choice = False
        self._id: str | None = None
        self._model: str | None = None
        self._usage = Usage()
        self._finish: str | None = None
        self.finished = False
        self._done = False  # [DONE] arrived

    def feed(self, chunk: bytes) -> None:
        for event in self._sse.feed(chunk):
            if self._done:
                continue  # the stream is over: the SDKs read nothing after [DONE], the filter drops it
            if event.data == "[DONE]":
                self.finished = self._done = True
                self._close_calls(None)
                continue
            data = load_event(event.data)
            if data is not None:
                self._on_chunk(data)

    def completed_tool_calls(self) -> list[TrajectoryEvent]:
        return self._queue.drain()

    def reply(self) -> Reply:
        events: list[TrajectoryEvent] = []
        if self._seen_choice:
            message = {
                "content": "".join(self._text) if self._text else None,
                "refusal": "".join(self._refusal) if self._refusal else None,
                "tool_calls": [self._calls[i].as_wire() for i in sorted(self._calls)],
            }
            _assistant_events(message, events)
        return Reply(
            events=tuple(events), usage=self._usage, response_id=self._id, model=self._model, finish_reason=self._finish
        )

    def _on_chunk(self, data: dict[str, Any]) -> None:
        if self._id is None:
            self._id = str_or_none(data.get("id"))
        if self._model is None:
            self._model = str_or_none(data.get("model"))
        if isinstance(data.get("usage"), dict):
            self._usage = usage_of(data["usage"], "prompt_tokens", "completion_tokens")
        choices = data.get("choices")
        if not isinstance(choices, list):
            return
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # n > 1: only the first choice becomes the trajectory
            self._seen_choice = True
            delta = choice.get("delta")
            if isinstance(delta, dict):
                self._on_delta(delta)
            if isinstance(choice.get("finish_reason"), str):
                self._finish = choice["finish_reason"]
                self.finished = True
                self._close_calls(None)

    def _on_delta(self, delta: dict[str, Any]) -> None:
        if isinstance(delta.get("content"), str):
            self._text.append(delta["content"])
        if isinstance(delta.get("refusal"), str):
            self._refusal.append(delta["refusal"])
        tool_calls = delta.get("tool_calls")
        if isinstance(delta.get("function_call"), dict) and tool_calls is None:  # legacy: one call, no id
            tool_calls = [{"index": 0, "function": delta["function_call"]}]  # (beside tool_calls: dropped)
        if not isinstance(tool_calls, list):
            return
        for piece in tool_calls:
            if not isinstance(piece, dict) or type(piece.get("index")) is not int:
                continue  # the stream filter drops such pieces: no client runs what was not judged
            index = piece["index"]
            call = self._calls.get(index)
            if call is None:
                call = self._calls[index] = _PartialCall()
                self._queue.expect(index)
                self._close_calls(index)
            piece_id = piece.get("id")
            repeat = isinstance(piece_id, str) and piece_id == call.id
            if isinstance(piece_id, str) and piece_id:
                call.id = _joined(call.id, piece_id, repeat)
            if isinstance(piece.get("type"), str):
                call.type = piece["type"]
            if isinstance(piece.get("custom"), dict):  # a custom tool: free-text input
                call.custom_data = True
                call.add(call.custom, piece["custom"], "input", repeat)
            if isinstance(piece.get("function"), dict):
                call.function_data = True
                call.add(call.function, piece["function"], "arguments", repeat)

    def _close_calls(self, before: int | None) -> None:
        """Mark calls complete: all of them, or those before index ``before`` whose JSON is whole."""
        for index, call in self._calls.items():
            if call.closed or (before is not None and index >= before):
                continue
            event = _tool_call_event(call.as_wire())
            if before is not None and isinstance(event.arguments, str):
                continue  # not parseable yet: wait for finish_reason
            call.closed = True
            self._queue.complete(index, event)
