"""What the proxy asks an adapter to do to a model's reply once policies have
judged it: data in, rewritten bytes out. Each adapter implements the same three
operations for its wire API (see :class:`Enforcer`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from adapters.model import Call, TrajectoryEvent


@dataclass(frozen=True, slots=True)
class ActionEdit:
    """The verdict on one tool call of a reply.

    - ``allow``: pass it on unchanged (byte for byte where the wire allows);
    - ``patch``: pass it on with ``arguments`` instead of the model's;
    - ``deny``: take it out; put ``message`` (assistant text that names the rule and
      the reason) where it was, so the agent loop sees why and carries on.
    """

    verdict: Literal["allow", "patch", "deny"]
    arguments: Any = None
    message: str | None = None


ALLOW = ActionEdit("allow")


@dataclass(frozen=True, slots=True)
class TextEdit:
    """Replace the reply's final assistant text (a denied or redacted message)."""

    text: str


class StreamFilter(Protocol):
    """Sits in a reply stream. Text flows at once; each tool call is held until it is
    complete, handed to the proxy as a :class:`TrajectoryEvent`, and released,
    rewritten or replaced per the proxy's :meth:`decide`. The stream the client
    gets stays valid for its SDK in every case (indexes, ids, sequence numbers and
    the final summary events agree with what was emitted).

    The proxy drives it like this::

        for chunk in upstream:
            f.feed(chunk)
            while (item := f.next()) is not None:
                if isinstance(item, bytes): write(item)
                else: f.decide(await judge(item))
        f.close()
        ...drain next() again...
    """

    def feed(self, chunk: bytes) -> None: ...

    def next(self) -> bytes | TrajectoryEvent | None:
        """Bytes to send now, a complete tool call awaiting :meth:`decide`, or None
        when more input is needed. After a tool call is returned, next() returns
        None until decide() is called."""

    def decide(self, edit: ActionEdit) -> None: ...

    def close(self) -> None:
        """The upstream stream ended (or broke): release whatever is still held as is."""


class Enforcer(Protocol):
    def rewrite_response(self, body: dict[str, Any], edits: list[ActionEdit], text: TextEdit | None) -> dict[str, Any]:
        """A non-streamed reply with its tool calls edited (``edits[i]`` is for the
        i-th tool call in the order the adapter decodes them) and, if given, its
        final text replaced. When every tool call is denied the reply ends as a
        plain text answer (finish/stop reason updated). Returns ``body`` itself
        when nothing changed (the proxy then forwards the upstream's bytes); parts
        of the reply the adapter does not decode, and so nothing judges, are removed."""

    def text_reply(self, call: Call, text: str) -> dict[str, Any]:
        """A complete, valid reply of this API that says ``text`` (request refusals)."""

    def text_reply_stream(self, call: Call, text: str) -> bytes:
        """The same as a whole SSE stream."""

    def stream_filter(self) -> StreamFilter: ...
