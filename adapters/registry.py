"""Which adapter serves which API and which path."""

from __future__ import annotations

from adapters.anthropic_messages import MessagesAdapter
from adapters.base import Adapter
from adapters.chat_enforce import ChatEnforcer
from adapters.edits import Enforcer
from adapters.messages_enforce import MessagesEnforcer
from adapters.openai_chat import ChatAdapter
from adapters.openai_responses import ResponsesAdapter
from adapters.responses_enforce import ResponsesEnforcer

ADAPTERS: dict[str, Adapter] = {a.api: a for a in (ChatAdapter(), ResponsesAdapter(), MessagesAdapter())}
ENFORCERS: dict[str, Enforcer] = {"chat": ChatEnforcer(), "responses": ResponsesEnforcer(), "messages": MessagesEnforcer()}

_PATHS = {"/v1/chat/completions": "chat", "/v1/responses": "responses", "/v1/messages": "messages"}


def adapter_for_path(path: str) -> Adapter | None:
    """The adapter for a request path (a trailing slash is tolerated), or None for pass-through."""
    api = _PATHS.get(path) or _PATHS.get(path.rstrip("/"))
    return ADAPTERS[api] if api else None
