"""What the Chat Completions enforcer and its stream filter share: the tool-call
fields of a delta or a message, refusal texts, and arguments on the wire."""

from __future__ import annotations

from typing import Any

import orjson

from adapters.edits import ActionEdit
from adapters.sse import encode_sse

TOOL_KEYS = ("tool_calls", "function_call")
TOOL_FINISH = frozenset(TOOL_KEYS)  # finish reasons that tell the client to run tools
PARAGRAPH = "\n\n"


def denial_text(edit: ActionEdit, name: str | None) -> str:
    """The refusal the agent reads; a deny without a message still says what happened."""
    return edit.message or f"The call to {name or 'a tool'} was denied by policy."


def wire_arguments(arguments: Any) -> str:
    """Arguments as Chat sends them: a JSON string. A str is taken as already on the wire,
    mirroring :class:`TrajectoryEvent`, where a str is the raw text of non-JSON arguments."""
    return arguments if isinstance(arguments, str) else orjson.dumps(arguments).decode()


def encode(data: dict[str, Any]) -> bytes:
    return encode_sse(orjson.dumps(data))
