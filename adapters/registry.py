"""Which adapter serves which API and which path."""

from __future__ import annotations

from adapters.anthropic_messages import MessagesAdapter
from adapters.base import Adapter
from adapters.openai_chat import ChatAdapter
from adapters.openai_responses import ResponsesAdapter

ADAPTERS: dict[str, Adapter] = {a.api: a for a in (ChatAdapter(), ResponsesAdapter(), MessagesAdapter())}

_PATHS = {"/v1/chat/completions": "chat", "/v1/responses": "responses", "/v1/messages": "messages"}


def adapter_for_path(path: str) -> Adapter | None:
    """The adapter for a request path (a trailing slash is tolerated), or None for pass-through."""
    api = _PATHS.get(path) or _PATHS.get(path.rstrip("/"))
    return ADAPTERS[api] if api else None
