"""Server-sent events: an incremental parser and an encoder.

The parser runs on every chunk the proxy streams, so it works on whole lines
with C-level ``bytes`` operations and never loops over single bytes. It follows
the WHATWG event-stream rules that matter for model APIs: ``\\n``, ``\\r\\n`` and
``\\r`` line endings, comment lines, multi-line ``data``, one optional space
after the colon, and a leading byte-order mark. ``id`` and ``retry`` are read
and dropped: no model API relies on reconnection.

Chunks may split anywhere. Line terminators are ASCII and never occur inside a
multi-byte UTF-8 sequence, so decoding whole lines is always safe.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event. ``event`` is None when the stream gave no ``event:`` field."""

    event: str | None
    data: str


class SSEParser:
    """Turns stream bytes into :class:`SSEEvent` s, however the bytes are split.

    Only the bytes after the last complete line are kept between calls, and only
    the new chunk is searched for line ends, so a long line arriving in many
    small pieces costs linear time.
    """

    __slots__ = ("_data", "_event", "_pending", "_skip_lf", "_started")

    def __init__(self) -> None:
        self._pending = bytearray()  # bytes of an unfinished line; never holds a line end
        self._skip_lf = False  # the last chunk ended in "\r": a "\n" next completes "\r\n"
        self._started = False  # the first line (where a BOM may sit) has been seen
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Consume ``chunk`` and return the events it completed, in order."""
        if not chunk:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[0] == 0x0A:
                chunk = chunk[1:]
                if not chunk:
                    return []
        cr = chunk.rfind(b"\r")
        last = max(chunk.rfind(b"\n"), cr)
        if last < 0:
            self._pending += chunk
            return []
        self._skip_lf = cr == len(chunk) - 1
        if self._pending:
            self._pending += chunk[: last + 1]
            region: bytes | bytearray = self._pending
            self._pending = bytearray(chunk[last + 1 :])
        else:
            region = chunk if last == len(chunk) - 1 else chunk[: last + 1]
            if last + 1 < len(chunk):
                self._pending += chunk[last + 1 :]
        if not self._started:  # the first region starts at the first byte of the stream
            self._started = True
            if region.startswith(_BOM):
                region = region[3:]
        return self._lines(region.splitlines())

    def _lines(self, lines: Iterable[bytes | bytearray]) -> list[SSEEvent]:
        out: list[SSEEvent] = []
        for line in lines:
            if not line:
                if self._data:
                    out.append(SSEEvent(self._event, "\n".join(self._data)))
                    self._data = []
                self._event = None
                continue
            if line[0] == 0x3A:  # ":" starts a comment (keep-alives)
                continue
            colon = line.find(b":")
            field: bytes | bytearray
            value: bytes | bytearray
            if colon < 0:
                field, value = line, b""
            else:
                field = line[:colon]
                start = colon + 2 if line[colon + 1 : colon + 2] == b" " else colon + 1
                value = line[start:]
            if field == b"data":
                self._data.append(value.decode("utf-8", "replace"))
            elif field == b"event":
                self._event = value.decode("utf-8", "replace") or None
        return out


def encode_sse(data: bytes | str, event: str | None = None) -> bytes:
    """One complete event (ending in a blank line) whose ``data`` parses back to ``data``."""
    if isinstance(data, str):
        data = data.encode()
    head = b""
    if event is not None:
        if "\n" in event or "\r" in event:
            raise ValueError("an SSE event name cannot contain a line break")
        head = b"event: " + event.encode() + b"\n"
    if b"\n" not in data and b"\r" not in data:
        return head + b"data: " + data + b"\n\n"
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return head + b"".join(b"data: " + line + b"\n" for line in data.split(b"\n")) + b"\n"
