"""``proctor export``: stored sessions as JSONL, one session per line, or as
OpenTelemetry spans (OTLP/JSON, :mod:`proxy.audit.otlp`).

A line of the JSONL format (``version`` 1), which ``proctor replay`` reads back::

    {"version": 1, "session": {...}, "calls": [...], "events": [...], "decisions": [...]}

``session`` and ``calls`` are the store's records, ``events`` the trajectory in
seq order (``TrajectoryEvent.to_dict``), ``decisions`` the OPA-style decision log.
Sessions are read from the store one at a time, so exporting a whole store streams.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from typing import IO, Any, AsyncIterator, Sequence

import orjson

from adapters.model import EventKind, TrajectoryEvent
from proxy.store.base import CallRecord, SessionRecord, SessionStore

FORMAT_VERSION = 1
_PAGE = 500


@dataclass(frozen=True, slots=True)
class SessionDump:
    """Everything the store holds about one session."""

    session: SessionRecord
    calls: list[CallRecord]
    events: list[TrajectoryEvent]
    decisions: list[dict[str, Any]]

    def to_doc(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "session": dataclasses.asdict(self.session),
            "calls": [dataclasses.asdict(c) for c in self.calls],
            "events": [ev.to_dict() for ev in self.events],
            "decisions": self.decisions,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> SessionDump:
        """Read an exported line back; ValueError says what is wrong with it."""
        version = doc.get("version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ValueError(f"export format version {version!r} is not supported (this Proctor reads {FORMAT_VERSION})")
        try:
            session = _record(SessionRecord, doc["session"])
            calls = [_record(CallRecord, c) for c in doc.get("calls") or []]
            events = [event_from_doc(e) for e in doc.get("events") or []]
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a Proctor session export: {e}") from None
        decisions = doc.get("decisions") or []
        if not isinstance(decisions, list) or not all(isinstance(d, dict) for d in decisions):
            raise ValueError("not a Proctor session export: 'decisions' must be a list of objects")
        return cls(session, calls, events, decisions)


def _record(cls: Any, doc: Any) -> Any:
    if not isinstance(doc, dict):
        raise ValueError(f"{cls.__name__} must be an object")
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in doc.items() if k in names})


def event_from_doc(doc: Any) -> TrajectoryEvent:
    if not isinstance(doc, dict):
        raise ValueError("each event must be an object")
    return TrajectoryEvent(
        kind=EventKind(doc["kind"]), text=doc.get("text"), tool_name=doc.get("tool_name"),
        arguments=doc.get("arguments"), tool_call_id=doc.get("tool_call_id"), role=doc.get("role"),
        labels=doc.get("labels") or {}, session_id=doc.get("session_id"), call_id=doc.get("call_id"),
        seq=doc.get("seq"), time=doc.get("time"),
    )


async def load_session(store: SessionStore, session_id: str) -> SessionDump | None:
    session = await store.get_session(session_id)
    if session is None:
        return None
    return SessionDump(
        session, await store.get_calls(session_id), await store.get_events(session_id),
        await store.get_decisions(session_id),
    )


async def missing_sessions(store: SessionStore, ids: Sequence[str]) -> list[str]:
    return [sid for sid in ids if await store.get_session(sid) is None]


async def count_sessions(store: SessionStore) -> int | None:
    read = getattr(store, "read", None)
    if read is None:
        return None
    return int(await read(lambda conn: conn.execute("SELECT count(*) FROM sessions").fetchone()[0]))


async def all_session_ids(store: SessionStore) -> AsyncIterator[str]:
    """Every session, oldest first, a page at a time (keyset paging: sessions
    recorded while the export runs neither shift nor repeat a page)."""
    read = getattr(store, "read", None)
    if read is None:  # a store without raw reads: its own listing, newest first
        offset = 0
        while page := await store.list_sessions(limit=_PAGE, offset=offset):
            for s in page:
                yield s.id
            offset += len(page)
        return
    after: tuple[float, str] = (float("-inf"), "")
    while True:
        rows = await read(lambda conn, a=after: conn.execute(
            "SELECT started, id FROM sessions WHERE (started, id) > (?, ?) ORDER BY started, id LIMIT ?", (*a, _PAGE)
        ).fetchall())
        for started, sid in rows:
            yield sid
        if len(rows) < _PAGE:
            return
        after = (rows[-1][0], rows[-1][1])


async def dumps(store: SessionStore, ids: Sequence[str]) -> AsyncIterator[SessionDump]:
    """The named sessions in the order given (all of them when none are named)."""
    source = _given(ids) if ids else all_session_ids(store)
    async for sid in source:
        dump = await load_session(store, sid)
        if dump is not None:
            yield dump


async def _given(ids: Sequence[str]) -> AsyncIterator[str]:
    for sid in ids:
        yield sid


async def export_sessions(
    store: SessionStore, ids: Sequence[str], fmt: str, out: IO[bytes], *, content: bool = False,
    progress: Progress | None = None,
) -> int:
    """Write the sessions to ``out``; returns how many were written."""
    from proxy.audit.otlp import OtlpWriter

    writer = OtlpWriter(out, store, content=content) if fmt == "otlp" else None
    n = 0
    async for dump in dumps(store, ids):
        if writer is not None:
            await writer.add(dump)
        else:
            out.write(orjson.dumps(dump.to_doc(), default=str) + b"\n")
        n += 1
        if progress is not None:
            progress.advance()
    if writer is not None:
        writer.close()
    return n


class Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal
    (pipes and CI logs stay clean)."""

    def __init__(
        self, total: int | None, what: str, stream: IO[str] | None = None, *, enabled: bool = True, width: int = 30,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and bool(getattr(self.stream, "isatty", lambda: False)())
        self.total, self.what, self.width = total, what, width
        self.done = 0
        self._drawn = 0.0

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.enabled and time.monotonic() - self._drawn >= 0.1:
            self._draw()

    def _draw(self) -> None:
        self._drawn = time.monotonic()
        if self.total:
            filled = min(self.width, self.width * self.done // self.total)
            bar = "#" * filled + "-" * (self.width - filled)
            self.stream.write(f"\r{self.what} [{bar}] {self.done}/{self.total}")
        else:
            self.stream.write(f"\r{self.what} {self.done}")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.done:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()
