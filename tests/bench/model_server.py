"""The benchmark's fast fake upstream: the scripted model in its own process.

Every call answers one tool-call turn (``read_file`` with :func:`reply_args` of the
request's message count: an agent that re-sends its history gets a new call each
turn, as from a real model, not one the loop rules would stop),
streamed in 30 pieces when asked to stream, with no request recording, on
uvloop when it is installed.

    python tests/bench/model_server.py --port 9000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from proxy.scripted_model import ToolCallSpec, Turn, create_model_app  # noqa: E402



def reply_args(n_messages: int) -> dict[str, object]:
    """The arguments of the tool call the model makes for a request of ``n_messages``
    messages. A client that continues a session sends this call back as the assistant turn."""
    return {"path": "src/forge/store/session_store.py", "start_line": n_messages, "end_line": n_messages + 240}


def reply_turn(api: str, body: dict[str, object]) -> Turn:
    messages = body.get("messages")
    n = len(messages) if isinstance(messages, list) else 0
    return Turn(tool_calls=(ToolCallSpec("read_file", reply_args(n)),), input_tokens=2100, output_tokens=38)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=30)
    args = parser.parse_args()
    from aiohttp import web

    try:
        import uvloop
    except ImportError:  # pragma: no cover
        uvloop = None
    app = create_model_app(reply_turn, chunks=args.chunks, record=False)
    web.run_app(
        app, host=args.host, port=args.port, print=None, access_log=None,
        loop=uvloop.new_event_loop() if uvloop else None,
    )


if __name__ == "__main__":
    main()
