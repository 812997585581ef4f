"""Helpers the three wire adapters share: body checks, text runs, tool-call ordering.

One rule for content holds in every adapter so that canonical hashes agree:
the text parts of a message are joined with ``""`` (a string and a list of
text parts with the same text give the same event), and non-text parts become
a short placeholder such as ``[image]`` so they still count in the hash.
"""

from __future__ import annotations

import bisect
import json
import re
from typing import Any

import orjson

from adapters.base import BadRequest
from adapters.model import Call, EventKind, TrajectoryEvent, Usage

# Part types that mean the same thing across APIs get the same placeholder.
_PLACEHOLDERS = {
    "image_url": "[image]",
    "input_image": "[image]",
    "image": "[image]",
    "input_audio": "[audio]",
    "audio": "[audio]",
    "file": "[file]",
    "input_file": "[file]",
}


def placeholder(part_type: str) -> str:
    """What a non-text content part contributes to a message's text."""
    return _PLACEHOLDERS.get(part_type) or f"[{part_type}]"


# The label of a custom tool's call, whose input is free text by design (a
# function tool's arguments are a JSON object; a string there means they broke).
FREE_TEXT: dict[str, Any] = {"free_text": True}


def parse_arguments(raw: Any) -> Any:
    """Tool arguments as parsed JSON; the raw value when it is not a JSON string."""
    if isinstance(raw, str):
        try:
            return loads_reply(raw)
        except NotJson:
            return raw
    return raw


def load_request(body: Any) -> dict[str, Any]:
    """The request as a dict; raw bytes are parsed here so callers may pass either."""
    if isinstance(body, (bytes, bytearray, memoryview, str)):
        try:
            body = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"The request body is not valid JSON ({exc}); send a JSON object.") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.", code="invalid_type")
    return body


class NotJson(ValueError):
    """A reply body or stream event that no JSON reader a client uses accepts."""


def loads_reply(data: bytes | bytearray | memoryview | str) -> Any:
    """An upstream reply or stream event, read as leniently as the clients read it.

    orjson takes strict JSON only; the SDKs use Python's ``json``, which also
    takes ``NaN`` and ``Infinity`` (Python servers emit them, in logprobs say),
    and bodies may start with a byte-order mark. Whatever a client would parse,
    Proctor must parse too, or a tool call would pass unjudged. Raises NotJson."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    text = bytes(data).decode("utf-8-sig", "replace") if not isinstance(data, str) else data.removeprefix("\ufeff")
    try:
        value = json.loads(text, parse_int=_int_as_orjson)
        # json reads a lone surrogate escape ("\ud83d") into a str no UTF-8 encoder takes
        # (orjson refuses it): U+FFFD stands in, as a lenient client shows it.
        return _without_lone_surrogates(value) if _LONE_SURROGATE.search(text) else value
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python reads (orjson: 1,024)
        raise NotJson("not JSON") from None


def _int_as_orjson(digits: str) -> int | float:
    """An integer as orjson reads it: past 64 bits, a float (which every later
    step, hashing and storing included, can serialise again)."""
    n = int(digits)
    if -(1 << 63) <= n < (1 << 64):
        return n
    try:
        return float(n)
    except OverflowError:  # past a float's range: orjson refuses the body, and so does this reader
        raise ValueError(f"an integer of {len(digits)} digits is out of range") from None


_LONE_SURROGATE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


_SURROGATE_CHAR = re.compile("[\ud800-\udfff]")


def _without_lone_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return _SURROGATE_CHAR.sub("\ufffd", value)
    if isinstance(value, list):
        return [_without_lone_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_without_lone_surrogates(k): _without_lone_surrogates(v) for k, v in value.items()}
    return value


def load_response(body: Any) -> dict[str, Any] | None:
    """The response as a dict, or None: response decoding never raises."""
    if isinstance(body, (bytes, bytearray, memoryview, str)):
        try:
            body = loads_reply(body)
        except NotJson:
            return None
    return body if isinstance(body, dict) else None


def load_event(data: str) -> dict[str, Any] | None:
    """One stream event's JSON payload, or None for junk."""
    try:
        value = loads_reply(data)
    except NotJson:
        return None
    return value if isinstance(value, dict) else None


def need_str(obj: dict[str, Any], key: str, path: str, what: str = "a string") -> str:
    """``obj[key]`` when it is a string; a BadRequest naming ``path`` otherwise."""
    value = obj.get(key)
    if isinstance(value, str):
        return value
    param = f"{path}.{key}" if path else key
    if value is None:
        raise BadRequest(f"'{param}' is required and must be {what}.", code="missing_field", param=param)
    raise BadRequest(f"'{param}' must be {what}, not {type_name(value)}.", code="invalid_type", param=param)


def need_model(body: dict[str, Any]) -> str:
    model = need_str(body, "model", "", 'a model name string such as "gpt-4o"')
    if not model:
        raise BadRequest("'model' must not be empty.", code="invalid_type", param="model")
    return model


def need_stream(body: dict[str, Any]) -> bool:
    stream = body.get("stream", False)
    if stream is None:
        return False
    if not isinstance(stream, bool):
        raise BadRequest("'stream' must be true or false.", code="invalid_type", param="stream")
    return stream


def need_list(body: dict[str, Any], key: str, what: str) -> list[Any]:
    """A required, non-empty array field; ``what`` describes its items for the message."""
    value = body.get(key)
    message = f"'{key}' must be a non-empty array of {what}."
    if value is None:
        raise BadRequest(message, code="missing_field", param=key)
    if not isinstance(value, list):
        raise BadRequest(message, code="invalid_type", param=key)
    if not value:
        raise BadRequest(message, code="invalid_request", param=key)
    return value


def need_object(value: Any, path: str, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest(f"'{path}' must be {what}, not {type_name(value)}.", code="invalid_type", param=path)
    return value


def optional_objects(body: dict[str, Any], keys: tuple[str, ...]) -> None:
    """Fields that, when present and not null, must be JSON objects (the API refuses others)."""
    for key in keys:
        value = body.get(key)
        if value is not None and not isinstance(value, dict):
            raise BadRequest(f"'{key}' must be an object, not {type_name(value)}.", code="invalid_type", param=key)


def optional_list(body: dict[str, Any], key: str, what: str) -> list[Any]:
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest(f"'{key}' must be an array of {what}.", code="invalid_type", param=key)
    return value


def bad_role(path: str, role: Any, allowed: tuple[str, ...]) -> BadRequest:
    names = ", ".join(f"'{r}'" for r in allowed)
    if role is None:
        return BadRequest(f"'{path}.role' is required: one of {names}.", code="missing_field", param=f"{path}.role")
    return BadRequest(
        f"'{path}.role' must be one of {names}, not {role!r}.", code="invalid_request", param=f"{path}.role"
    )


def type_name(value: Any) -> str:
    """The JSON name of a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def continued(prior: Call | None, field: str) -> tuple[list[TrajectoryEvent], dict[str, str], int]:
    """Where decoding a history list starts: after the elements of ``prior``'s list
    (the events they decoded to, the tool names they define, how many they are),
    or, without a prior call, at the beginning."""
    if prior is None or prior.listed is None:
        return [], {}, 0
    listed = prior.listed
    if listed.field != field:
        raise ValueError(f"a prior call's {listed.field} cannot continue a request's {field}")
    return list(prior.history[listed.head:]), dict(listed.names), listed.count


def session_metadata(body: dict[str, Any]) -> dict[str, Any]:
    """The body fields the proxy may use as session keys."""
    return {k: body[k] for k in ("metadata", "user", "safety_identifier", "prompt_cache_key") if k in body}


def usage_of(usage: Any, input_key: str, output_key: str) -> Usage:
    if not isinstance(usage, dict):
        return Usage()
    inp, out = usage.get(input_key), usage.get(output_key)
    return Usage(
        input_tokens=inp if isinstance(inp, int) else None,
        output_tokens=out if isinstance(out, int) else None,
    )


def str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


class MessageEvents:
    """Collects the events of one message: runs of text, split by tool events.

    Consecutive text parts form one event; a tool call or tool result ends the
    run, so blocks keep their order. Empty text runs are dropped, but a message
    that yields nothing at all still yields one (empty) text event: every turn
    leaves a trace, and ``""`` vs ``null`` content cannot change a hash.
    """

    __slots__ = ("_start", "_text", "kind", "out", "role")

    def __init__(self, out: list[TrajectoryEvent], kind: EventKind, role: str | None) -> None:
        self.out = out
        self.kind = kind
        self.role = role
        self._text: list[str] = []
        self._start = len(out)

    def text(self, text: str) -> None:
        self._text.append(text)

    def event(self, event: TrajectoryEvent) -> None:
        self._flush()
        self.out.append(event)

    def close(self) -> None:
        self._flush()
        if len(self.out) == self._start:
            self.out.append(TrajectoryEvent(kind=self.kind, text="", role=self.role))

    def _flush(self) -> None:
        if self._text:
            text = "".join(self._text)
            self._text = []
            if text:
                self.out.append(TrajectoryEvent(kind=self.kind, text=text, role=self.role))


class ToolCallQueue:
    """Hands a stream's tool calls to the proxy once each, in order, when complete.

    A call is handed out only after every earlier call (by position in the
    response) has been, so parallel calls are judged in the order they were made.
    """

    __slots__ = ("_done", "_given", "_order")

    def __init__(self) -> None:
        self._order: list[int] = []  # positions of the tool calls seen so far, sorted
        self._done: dict[int, TrajectoryEvent] = {}
        self._given: set[int] = set()

    def expect(self, position: int) -> None:
        """A tool call started at ``position``: later calls wait for it."""
        if position not in self._order:
            bisect.insort(self._order, position)

    def complete(self, position: int, event: TrajectoryEvent) -> None:
        if position in self._given:
            return
        self.expect(position)
        self._done[position] = event

    def drain(self) -> list[TrajectoryEvent]:
        out: list[TrajectoryEvent] = []
        for position in self._order:
            if position in self._given:
                continue
            event = self._done.get(position)
            if event is None:
                break
            self._given.add(position)
            out.append(event)
        return out


def text_pieces(
    content: Any, path: str, *, strict: bool, text_keys: dict[str, str], part_shape: str,
    noun: str = "content parts", none_is_empty: bool = True,
) -> list[str]:
    """The text pieces of ``content``: a string, or a list of parts whose ``type`` maps
    (in ``text_keys``) to the key holding its text; other parts become placeholders.
    ``strict`` (requests) raises BadRequest naming the path; replies are read leniently."""
    if content is None and none_is_empty:
        return []
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        if strict:
            raise BadRequest(f"'{path}' must be a string or an array of {noun}, not {type_name(content)}.", "invalid_type", path)
        return []
    parts: list[str] = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            if strict:
                raise BadRequest(f"'{path}[{j}]' must be {part_shape}.", "invalid_type", f"{path}[{j}]")
            continue
        key = text_keys.get(part["type"])
        if key is None:
            parts.append(placeholder(part["type"]))
            continue
        text = need_str(part, key, f"{path}[{j}]") if strict else part.get(key)
        if isinstance(text, str):
            parts.append(text)
    return parts
