"""The full-text index over events (``events_fts``) and how it stays current.

Tokenising an event's text costs more than storing the event, so indexing is
kept off the path that records a call: the store's writer indexes new events in
bounded chunks when its queue is empty (and between batches when it falls
``MAX_LAG`` rows behind). Yet an event is searchable the moment it commits: a
search also runs over the events the index does not hold yet, tokenised into a
private in-memory index with the same tokenizer, so it never misses an event
recorded a moment ago, whichever process recorded it.

What the index holds is always a prefix of the events table by rowid: SQLite
lets one writer at a time append, so rowids grow in commit order, events are
never deleted, and indexing goes in rowid order inside a write transaction. The
index's highest rowid is therefore the mark below which every event is indexed.
"""

from __future__ import annotations

import sqlite3

TOKENIZE = "unicode61 remove_diacritics 2"
# What one event contributes to the index: its text, tool name and arguments.
BODY = "coalesce(text, '') || ' ' || coalesce(tool_name, '') || ' ' || coalesce(arguments, '')"
CHUNK = 200  # events indexed in one transaction: a call arriving meanwhile waits a few ms at most
MAX_LAG = 2000  # events left unindexed before the writer indexes even while busy (bounds a search's extra work)

FTS_DDL: list[str] = [
    f"CREATE VIRTUAL TABLE IF NOT EXISTS events_fts USING fts5(body, content='', tokenize='{TOKENIZE}')",
    # Indexes whatever is missing in one statement (a migration, a bulk load).
    f"INSERT INTO events_fts (rowid, body) SELECT rowid, {BODY} FROM events"
    " WHERE rowid > coalesce((SELECT rowid FROM events_fts ORDER BY rowid DESC LIMIT 1), 0)",
]


def indexed_upto(conn: sqlite3.Connection) -> int:
    """The highest rowid of the events the index holds (0 for none)."""
    row = conn.execute("SELECT rowid FROM events_fts ORDER BY rowid DESC LIMIT 1").fetchone()
    return row[0] if row else 0


def latest_event(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT max(rowid) FROM events").fetchone()
    return row[0] or 0


def index_pending(conn: sqlite3.Connection, limit: int = CHUNK) -> tuple[int, int]:
    """Index up to ``limit`` events the index does not hold yet, oldest first.
    Runs inside the caller's write transaction (which keeps two writers from
    indexing the same rows). Returns (the new mark, how many events remain)."""
    mark = indexed_upto(conn)
    rows = conn.execute(
        f"SELECT rowid, {BODY} FROM events WHERE rowid > ? ORDER BY rowid LIMIT ?", (mark, limit)
    ).fetchall()
    if rows:
        conn.executemany("INSERT INTO events_fts (rowid, body) VALUES (?, ?)", [tuple(r) for r in rows])
        mark = rows[-1][0]
    return mark, max(latest_event(conn) - mark, 0)


def fts_phrase(text: str) -> str:
    """The user's words as one FTS5 phrase: whole words, in this order (case,
    accents and punctuation between them do not matter)."""
    return '"' + text.replace('"', '""') + '"'


def unindexed_matches(conn: sqlite3.Connection, phrase: str) -> list[str]:
    """Sessions whose events not yet in ``events_fts`` match ``phrase`` (an FTS5
    query): those events are tokenised here, as the index would, and searched."""
    rows = conn.execute(
        f"SELECT rowid, session_id, {BODY} FROM events WHERE rowid > ?", (indexed_upto(conn),)
    ).fetchall()
    if not rows:
        return []
    owner = {r[0]: r[1] for r in rows}
    recent = sqlite3.connect(":memory:")
    try:
        recent.execute(f"CREATE VIRTUAL TABLE recent USING fts5(body, content='', tokenize='{TOKENIZE}')")
        recent.executemany("INSERT INTO recent (rowid, body) VALUES (?, ?)", [(r[0], r[2]) for r in rows])
        hits = recent.execute("SELECT rowid FROM recent WHERE recent MATCH ?", (phrase,)).fetchall()
    finally:
        recent.close()
    return list(dict.fromkeys(owner[h[0]] for h in hits))
