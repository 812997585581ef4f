"""The contract each wire-API adapter fulfils. Adapters are pure: no I/O, no state
beyond the stream decoder object they hand out."""

from __future__ import annotations

from typing import Any, Protocol

from adapters.model import Call, Reply


class BadRequest(ValueError):
    """The client's body cannot be understood. ``code`` is stable; the message says what to fix."""

    def __init__(self, message: str, code: str = "invalid_request", param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param


class StreamDecoder(Protocol):
    """Fed the raw bytes of a server-sent-event stream in whatever pieces they arrive."""

    finished: bool  # the stream's own end arrived (a finish reason, a terminal event, message_stop)

    def feed(self, chunk: bytes) -> None:
        """Consume bytes; split points may fall anywhere, even inside a UTF-8 character."""

    def reply(self) -> Reply:
        """Everything decoded so far (complete once the stream ended)."""


class Adapter(Protocol):
    api: str  # "chat", "responses", "messages"
    history_field: str  # the body's history list: "messages" or "input"

    def decode_request(self, body: Any, prior: Call | None = None) -> Call:
        """Raise :class:`BadRequest` when the body is not a valid request of this API.
        With ``prior``, the body's history list holds only the elements after
        ``prior``'s (adapters/resend.py), which decode as if they followed them."""

    def decode_response(self, body: Any) -> Reply: ...

    def stream_decoder(self) -> StreamDecoder: ...

    def error_body(self, message: str, *, type: str, code: str, param: str | None = None) -> dict[str, Any]:
        """The API's own error shape."""
