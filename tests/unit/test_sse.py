"""The SSE parser must give the same events however the bytes are split."""

from __future__ import annotations

import time

import pytest

from adapters.sse import SSEEvent, SSEParser, encode_sse

# Every rule at once: a BOM, three line-ending styles, comments, multi-line data,
# no space / two spaces after the colon, a field without colon, id/retry,
# an event without data (not dispatched), multi-byte UTF-8, an unfinished tail.
STREAM = (
    "\ufeff: keep-alive comment\r\n"
    "event: greeting\r\n"
    "data: héllo wörld 🌍\r\n"
    "\r\n"
    "data:no-space\n"
    "data:  two spaces\n"
    "id: 42\n"
    "retry: 1000\n"
    "\n"
    "event: lonely\r"
    "\r"
    "data\r"
    "\r"
    "event: multi\n"
    'data: {"a":\n'
    "data: 1}\n"
    "\n"
    ":another comment\n"
    "data: [DONE]\n"
    "\n"
    "data: unfinished"
).encode()

EXPECTED = [
    SSEEvent("greeting", "héllo wörld 🌍"),
    SSEEvent(None, "no-space\n two spaces"),
    SSEEvent(None, ""),
    SSEEvent("multi", '{"a":\n1}'),
    SSEEvent(None, "[DONE]"),
]


def parse(*chunks: bytes) -> list[SSEEvent]:
    parser = SSEParser()
    return [event for chunk in chunks for event in parser.feed(chunk)]


def test_whole_stream() -> None:
    assert parse(STREAM) == EXPECTED


def test_every_split_point() -> None:
    for i in range(len(STREAM) + 1):
        assert parse(STREAM[:i], STREAM[i:]) == EXPECTED, i


def test_every_pair_of_split_points() -> None:
    n = len(STREAM)
    for i in range(n + 1):
        for j in range(i, n + 1, 3):
            assert parse(STREAM[:i], STREAM[i:j], STREAM[j:]) == EXPECTED, (i, j)


def test_one_byte_at_a_time() -> None:
    assert parse(*(STREAM[i : i + 1] for i in range(len(STREAM)))) == EXPECTED


def test_empty_chunks_change_nothing() -> None:
    chunks = [b"", b"data: a\r", b"", b"\n", b"", b"\n", b""]
    assert parse(*chunks) == [SSEEvent(None, "a")]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_line_endings(newline: bytes) -> None:
    body = newline.join([b"event: x", b"data: 1", b"", b"data: 2", b"", b""])
    assert parse(body) == [SSEEvent("x", "1"), SSEEvent(None, "2")]


def test_cr_then_lf_in_next_chunk_is_one_line_end() -> None:
    # "\r" ends a line at once; a "\n" right after it must not count as a blank line.
    assert parse(b"data: a\r", b"\ndata: b\r\n\r\n") == [SSEEvent(None, "a\nb")]


def test_event_name_resets_after_dispatch() -> None:
    assert parse(b"event: first\ndata: 1\n\ndata: 2\n\n") == [SSEEvent("first", "1"), SSEEvent(None, "2")]


def test_incomplete_event_is_not_dispatched() -> None:
    assert parse(b"data: 1\n") == []
    assert parse(b"data: 1\n", b"\n") == [SSEEvent(None, "1")]


def test_invalid_utf8_never_raises() -> None:
    assert parse(b"data: \xff\xfe\n\n") == [SSEEvent(None, "\ufffd\ufffd")]


def test_a_long_line_in_small_pieces_is_linear() -> None:
    line = b"data: " + b"x" * 2_000_000 + b"\n\n"
    parser = SSEParser()
    start = time.perf_counter()
    events = [e for i in range(0, len(line), 100) for e in parser.feed(line[i : i + 100])]
    assert time.perf_counter() - start < 2.0
    assert events == [SSEEvent(None, "x" * 2_000_000)]


@pytest.mark.parametrize(
    ("data", "event"),
    [
        (b'{"a": 1}', None),
        (b"two\nlines", "multi"),
        (b"crlf\r\nand\rcr", None),
        (b"trailing newline\n", None),
        (b"", "empty"),
        ("ünïcode 🌍".encode(), "response.output_text.delta"),
    ],
)
def test_encode_round_trips(data: bytes, event: str | None) -> None:
    normalised = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").decode()
    assert parse(encode_sse(data, event)) == [SSEEvent(event, normalised)]


def test_encode_shape() -> None:
    assert encode_sse(b'{"x":1}') == b'data: {"x":1}\n\n'
    assert encode_sse("[DONE]") == b"data: [DONE]\n\n"
    assert encode_sse(b"{}", "message_stop") == b"event: message_stop\ndata: {}\n\n"


def test_encode_rejects_line_break_in_event_name() -> None:
    with pytest.raises(ValueError):
        encode_sse(b"{}", "bad\nname")


def test_split_terminator_holds_back_the_final_event() -> None:
    from proxy.calls import split_terminator

    chunk = b'data: {"x": 1}\n\ndata: [DONE]\n\n'
    assert split_terminator("chat", chunk) == (b'data: {"x": 1}\n\n', b"data: [DONE]\n\n")
    assert split_terminator("chat", b"data: {}\n\n") == (b"data: {}\n\n", b"")
    msg = b'event: content_block_stop\ndata: {}\n\nevent: message_stop\ndata: {"type":"message_stop"}\n\n'
    head, tail = split_terminator("messages", msg)
    assert head == b"event: content_block_stop\ndata: {}\n\n" and tail.startswith(b"event: message_stop")
    crlf = b'event: a\r\ndata: {}\r\n\r\nevent: response.completed\r\ndata: {"type":"response.completed"}\r\n\r\n'
    head, tail = split_terminator("responses", crlf)
    assert head == b"event: a\r\ndata: {}\r\n\r\n" and tail.startswith(b"event: response.completed")
