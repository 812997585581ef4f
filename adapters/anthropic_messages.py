"""Anthropic Messages (``POST /v1/messages``) as trajectory events.

A message's content blocks become events in block order: consecutive text
blocks form one text event, each ``tool_use`` a TOOL_CALL, each ``tool_result``
a TOOL_RESULT. Thinking blocks are skipped (clients may drop them from earlier
turns, which must not change a hash); any other block (image, document, server
tool blocks) counts as a placeholder such as ``[image]`` in the text.
"""

from __future__ import annotations

from typing import Any

from adapters.base import BadRequest
from adapters.common import (
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
    parse_arguments,
    placeholder,
    session_metadata,
    str_or_none,
    text_pieces,
    type_name,
    usage_of,
)
from adapters.memo import MessageMemo, decode_with
from adapters.model import Call, EventKind, Listed, Reply, ToolSpec, TrajectoryEvent, Usage
from adapters.sse import SSEParser

_MEMO = MessageMemo()  # request items this process has decoded, by their bytes (adapters/memo.py)
_ROLES = ("user", "assistant", "system")
_KINDS = {"user": EventKind.USER, "assistant": EventKind.ASSISTANT, "system": EventKind.SYSTEM}
_SKIPPED = frozenset({"thinking", "redacted_thinking"})
_NOT_PARAMS = frozenset({"model", "messages", "system", "tools", "stream"})
_ANTHROPIC_TYPES = {"policy_denied": "permission_error", "server_error": "api_error", "upstream_error": "api_error"}
_BLOCK_SHAPE = 'a content block such as {"type": "text", "text": "..."}'


class MessagesAdapter:
    """The Anthropic Messages adapter; stateless, one instance serves every call."""

    api = "messages"
    history_field = "messages"  # the list an agent re-sends with each call (adapters/resend.py)

    def decode_request(self, body: Any, prior: Call | None = None) -> Call:
        """``prior``: an earlier call whose messages this body's ``messages`` continue
        (the body then holds only the messages after them; adapters/resend.py)."""
        body = load_request(body)
        model = need_model(body)
        max_tokens = body.get("max_tokens")
        if max_tokens is None:
            raise BadRequest("'max_tokens' is required by the Messages API (e.g. 1024).", "missing_field", "max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
            raise BadRequest("'max_tokens' must be an integer.", "invalid_type", "max_tokens")
        messages = need_list(body, "messages", 'message objects such as {"role": "user", "content": "..."}')
        history: list[TrajectoryEvent] = []
        system = body.get("system")
        if system is not None:
            text = "".join(_text_parts(system, "system", strict=True))
            if text:
                history.append(TrajectoryEvent(kind=EventKind.SYSTEM, text=text, role="system"))
        head = len(history)
        listed, names, start = continued(prior, "messages")  # names: tool_use id -> tool name, for the results that follow
        history += listed
        for i, message in enumerate(messages, start):
            path = f"messages[{i}]"
            message = need_object(message, path, 'a message object such as {"role": "user", "content": "..."}')
            role = message.get("role")
            if role not in _KINDS:
                raise bad_role(path, role, _ROLES)
            content = message.get("content")
            if content is None:
                raise BadRequest(f"'{path}.content' is required.", "missing_field", f"{path}.content")
            history += decode_with(_MEMO, message, _inherited_names(content, names), names,
                                   lambda: _message_events(content, role, f"{path}.content", names))  # noqa: B023
        return Call(
            api=self.api,
            model=model,
            stream=need_stream(body),
            history=tuple(history),
            tools=_tools(body),
            params={k: v for k, v in body.items() if k not in _NOT_PARAMS},
            metadata=session_metadata(body),
            listed=Listed("messages", head, start + len(messages), names),
        )

    def decode_response(self, body: Any) -> Reply:
        data = load_response(body)
        if data is None or data.get("type") == "error":
            return Reply(events=())
        events: list[TrajectoryEvent] = []
        if isinstance(data.get("content"), list):
            _content_events(data["content"], "assistant", events, {})
        return Reply(
            events=tuple(events),
            usage=usage_of(data.get("usage"), "input_tokens", "output_tokens"),
            response_id=str_or_none(data.get("id")),
            model=str_or_none(data.get("model")),
            finish_reason=str_or_none(data.get("stop_reason")),
        )

    def stream_decoder(self) -> MessagesStreamDecoder:
        return MessagesStreamDecoder()

    def error_body(self, message: str, *, type: str, code: str, param: str | None = None) -> dict[str, Any]:
        # Anthropic's own error types; Proctor's stable code stays in `code`.
        error: dict[str, Any] = {"type": _ANTHROPIC_TYPES.get(type, type), "message": message, "code": code}
        if param is not None:
            error["param"] = param
        return {"type": "error", "error": error}


def _message_events(content: Any, role: str, path: str, names: dict[str, str]) -> list[TrajectoryEvent]:
    """Validate one request message's content; its events."""
    _check_content(content, path)
    out: list[TrajectoryEvent] = []
    _content_events(content, role, out, names)
    return out


def _inherited_names(content: Any, names: dict[str, str]) -> tuple[str | None, ...]:
    """What a message's tool results take from the calls before them: the tools' names."""
    if not isinstance(content, list):
        return ()
    return tuple(names.get(b["tool_use_id"]) for b in content
                 if isinstance(b, dict) and b.get("type") == "tool_result" and isinstance(b.get("tool_use_id"), str))


def _check_content(content: Any, path: str) -> None:
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise BadRequest(
            f"'{path}' must be a string or an array of content blocks, not {type_name(content)}.", "invalid_type", path
        )
    for j, block in enumerate(content):
        where = f"{path}[{j}]"
        block = need_object(block, where, _BLOCK_SHAPE)
        kind = need_str(block, "type", where, 'a block type such as "text"')
        if kind == "text":
            need_str(block, "text", where)
        elif kind == "tool_use":
            need_str(block, "id", where)
            need_str(block, "name", where)
            need_object(block.get("input"), f"{where}.input", "an object of tool arguments")
        elif kind == "tool_result":
            need_str(block, "tool_use_id", where)
            if block.get("content") is not None:
                _text_parts(block["content"], f"{where}.content", strict=True)


def _content_events(content: Any, role: str, out: list[TrajectoryEvent], names: dict[str, str]) -> None:
    """Events of one message's content, in block order (see the module docstring)."""
    events = MessageEvents(out, _KINDS.get(role, EventKind.USER), role)
    if isinstance(content, str):
        events.text(content)
    for block in content if isinstance(content, list) else ():
        kind = block.get("type") if isinstance(block, dict) else None
        if not isinstance(kind, str) or kind in _SKIPPED:
            continue
        if kind == "text":
            if isinstance(block.get("text"), str):
                events.text(block["text"])
        elif kind == "tool_use":
            event = _tool_use_event(block)
            if event.tool_call_id is not None and event.tool_name is not None:
                names[event.tool_call_id] = event.tool_name
            events.event(event)
        elif kind == "tool_result":
            call_id = str_or_none(block.get("tool_use_id"))
            events.event(
                TrajectoryEvent(
                    kind=EventKind.TOOL_RESULT,
                    text="".join(_text_parts(block.get("content"), "", strict=False)),
                    tool_name=names.get(call_id) if call_id is not None else None,
                    tool_call_id=call_id,
                    role=role,
                    labels={"is_error": True} if block.get("is_error") is True else {},
                )
            )
        else:
            events.text(placeholder(kind))
    events.close()


def _tool_use_event(block: dict[str, Any]) -> TrajectoryEvent:
    return TrajectoryEvent(
        kind=EventKind.TOOL_CALL,
        tool_name=str_or_none(block.get("name")),
        arguments=block.get("input"),
        tool_call_id=str_or_none(block.get("id")),
        role="assistant",
    )


def _text_parts(content: Any, path: str, *, strict: bool) -> list[str]:
    """Text of a string or a list of blocks (system prompt, tool result content)."""
    return text_pieces(content, path, strict=strict, text_keys={"text": "text"}, part_shape=_BLOCK_SHAPE, noun="content blocks")


def _tools(body: dict[str, Any]) -> tuple[ToolSpec, ...]:
    specs: list[ToolSpec] = []
    for i, tool in enumerate(optional_list(body, "tools", "tool objects")):
        path = f"tools[{i}]"
        tool = need_object(tool, path, 'a tool such as {"name": "...", "input_schema": {...}}')
        schema = tool.get("input_schema")
        if schema is not None and not isinstance(schema, dict):
            raise BadRequest(
                f"'{path}.input_schema' must be a JSON Schema object.", "invalid_type", f"{path}.input_schema"
            )
        specs.append(
            ToolSpec(
                name=need_str(tool, "name", path), description=str_or_none(tool.get("description")), parameters=schema
            )
        )
    return tuple(specs)


class MessagesStreamDecoder:
    """Rebuilds a streamed message into the Reply the JSON body would give.

    A ``tool_use`` block is complete at its ``content_block_stop``;
    :meth:`completed_tool_calls` returns each once, in block order. ``finished``
    is True after ``message_stop``.
    """

    def __init__(self) -> None:
        self._sse = SSEParser()
        self._queue = ToolCallQueue()
        self._blocks: dict[int, dict[str, Any]] = {}  # index -> block as started
        self._text: dict[int, list[str]] = {}
        self._json: dict[int, list[str]] = {}
        self._started = False
        self._id: str | None = None
        self._model: str | None = None
        self._input_tokens: int | None = None
        self._output_tokens: int | None = None
        self._stop_reason: str | None = None
        self.finished = False

    def feed(self, chunk: bytes) -> None:
        for event in self._sse.feed(chunk):
            data = load_event(event.data)
            if data is not None:
                self._on_event(data)

    def completed_tool_calls(self) -> list[TrajectoryEvent]:
        return self._queue.drain()

    def reply(self) -> Reply:
        events: list[TrajectoryEvent] = []
        if self._started:
            _content_events([self._block(i) for i in sorted(self._blocks)], "assistant", events, {})
        return Reply(
            events=tuple(events),
            usage=Usage(input_tokens=self._input_tokens, output_tokens=self._output_tokens),
            response_id=self._id,
            model=self._model,
            finish_reason=self._stop_reason,
        )

    def _on_event(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        index = data.get("index")
        if kind == "message_start" and isinstance(data.get("message"), dict):
            message = data["message"]
            self._started = True
            self._id, self._model = str_or_none(message.get("id")), str_or_none(message.get("model"))
            self._usage(message.get("usage"))
            content = message.get("content")
            for i, block in enumerate(content if isinstance(content, list) else ()):
                if isinstance(block, dict):
                    self._blocks[i] = block
        elif kind == "message_delta":
            delta = data.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
                self._stop_reason = delta["stop_reason"]
            self._usage(data.get("usage"))
        elif kind == "message_stop":
            self.finished = True
        elif not isinstance(index, int) or isinstance(index, bool):
            return
        elif kind == "content_block_start" and isinstance(data.get("content_block"), dict):
            self._started = True
            self._blocks[index] = data["content_block"]
            if data["content_block"].get("type") == "tool_use":
                self._queue.expect(index)
        elif kind == "content_block_delta" and isinstance(data.get("delta"), dict):
            delta = data["delta"]
            if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
                self._text.setdefault(index, []).append(delta["text"])
            elif delta.get("type") == "input_json_delta" and isinstance(delta.get("partial_json"), str):
                self._json.setdefault(index, []).append(delta["partial_json"])
        elif kind == "content_block_stop" and index in self._blocks:
            block = self._block(index)
            if block.get("type") == "tool_use":
                self._queue.complete(index, _tool_use_event(block))

    def _usage(self, usage: Any) -> None:
        seen = usage_of(usage, "input_tokens", "output_tokens")
        if seen.input_tokens is not None:
            self._input_tokens = seen.input_tokens
        if seen.output_tokens is not None:  # cumulative: the last one counts
            self._output_tokens = seen.output_tokens

    def _block(self, index: int) -> dict[str, Any]:
        """The block at ``index`` with its deltas applied."""
        block = self._blocks[index]
        if index in self._text:
            block = {**block, "text": (str_or_none(block.get("text")) or "") + "".join(self._text[index])}
        if index in self._json:
            raw = "".join(self._json[index])
            if raw.strip():  # an empty input streams as no JSON at all: keep the start's {}
                block = {**block, "input": parse_arguments(raw)}
        return block
