"""``proctor``: serve the proxy, look at sessions, run the demo."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any, Sequence

os.environ.setdefault("RUST_BACKTRACE", "0")  # regorus errors stay one line


def _store_url(args: argparse.Namespace) -> str:
    from proxy.config import load_config

    return args.store or load_config(getattr(args, "config", None)).store


def cmd_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from proxy.app import create_app
    from proxy.config import load_config

    config = load_config(
        args.config,
        overrides={
            "host": args.host, "port": args.port, "upstream": args.upstream,
            "anthropic_upstream": args.anthropic_upstream, "store": args.store,
        },
    )
    try:
        import uvloop
    except ImportError:  # pragma: no cover - optional speed-up
        uvloop = None
    print(f"Proctor listening on http://{config.host}:{config.port}/v1 -> {config.upstream} (store {config.store})", flush=True)
    web.run_app(
        create_app(config), host=config.host, port=config.port, print=None, access_log=None,
        loop=uvloop.new_event_loop() if uvloop else None,
    )
    return 0


def cmd_sessions(args: argparse.Namespace) -> int:
    from proxy import render

    sessions = asyncio.run(_with_store(_store_url(args), lambda s: s.list_sessions(limit=args.limit)))
    print(render.sessions_json(sessions) if args.json else render.sessions_table(sessions))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from proxy import render

    async def load(store: Any) -> Any:
        session = await store.get_session(args.session_id)
        if session is None:
            return None
        return (
            session, await store.get_calls(args.session_id), await store.get_events(args.session_id),
            await _tree(store, session),
        )

    found = asyncio.run(_with_store(_store_url(args), load))
    if found is None:
        print(f"proctor: no session {args.session_id!r} in the store; `proctor sessions` lists them", file=sys.stderr)
        return 1
    print(render.session_json(*found) if args.json else render.session_text(*found))
    return 0


def cmd_policy_test(args: argparse.Namespace) -> int:
    from proxy.policy.bundle import bundled_library
    from proxy.policy.testing import report, run_tests

    return report(run_tests(args.dir or bundled_library(), args.run), sys.stdout, args.verbose)


def cmd_policy_schema(args: argparse.Namespace) -> int:
    import json

    from proxy.policy.schema import input_schema

    print(json.dumps(input_schema(), indent=2))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from proxy.demo import run_demo

    return asyncio.run(run_demo(store=args.store))


async def _tree(store: Any, session: Any, limit: int = 200) -> list[tuple[int, Any]]:
    """The sub-agent tree under the session's root, depth-first, as (depth, session)."""
    root = await store.get_session(session.root_id or session.id) or session
    out: list[tuple[int, Any]] = []
    stack = [(0, root)]
    while stack and len(out) < limit:
        depth, node = stack.pop()
        out.append((depth, node))
        stack.extend((depth + 1, c) for c in reversed(await store.get_children(node.id)))
    return out


async def _with_store(url: str, fn: Any) -> Any:
    from proxy.store import open_store

    store = open_store(url)
    await store.open()
    try:
        return await fn(store)
    finally:
        await store.close()


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="proctor", description="A policy-enforcing proxy for AI agent systems.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the proxy")
    serve.add_argument("--host", default=None, help="listen address (PROCTOR_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="listen port (PROCTOR_PORT, default 8080)")
    serve.add_argument("--upstream", default=None, help="OpenAI-style API base URL (PROCTOR_UPSTREAM, OPENAI_BASE_URL)")
    serve.add_argument("--anthropic-upstream", default=None, help="Anthropic API base URL (PROCTOR_ANTHROPIC_UPSTREAM)")
    serve.add_argument("--store", default=None, help="sqlite:///path.db (PROCTOR_STORE, default ./proctor.db)")
    serve.add_argument("--config", default=None, help="a TOML file with the same settings (PROCTOR_CONFIG)")
    serve.set_defaults(func=cmd_serve)

    for name, fn, text in (("sessions", cmd_sessions, "list recorded sessions"), ("show", cmd_show, "print one session's trajectory")):
        p = sub.add_parser(name, help=text)
        if name == "show":
            p.add_argument("session_id")
        p.add_argument("--store", default=env("PROCTOR_STORE"), help="store URL (default ./proctor.db)")
        p.add_argument("--config", default=None)
        p.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "sessions":
            p.add_argument("--limit", type=int, default=50)
        p.set_defaults(func=fn)

    policy = sub.add_parser("policy", help="work with policy directories").add_subparsers(dest="policy_command", required=True)
    ptest = policy.add_parser("test", help="run *_test.rego with the embedded engine (like opa test)")
    ptest.add_argument("dir", nargs="?", help="policy directory (default: the bundled library)")
    ptest.add_argument("-v", "--verbose", action="store_true", help="list passing tests too")
    ptest.add_argument("-r", "--run", default=None, help="only tests whose name matches this regex")
    ptest.set_defaults(func=cmd_policy_test)
    pschema = policy.add_parser("schema", help="print the JSON Schema of the policy input")
    pschema.set_defaults(func=cmd_policy_schema)

    demo = sub.add_parser("demo", help="run a scripted agent session through Proctor, no API key needed")
    demo.add_argument("--store", default="sqlite:///proctor-demo.db", help="where to record the demo session")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from proxy.errors import ProctorError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ProctorError as e:
        print(f"proctor: {e.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
