"""``proctor``: serve the proxy, look at sessions, run the demo."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sqlite3
import sys
from typing import Any, Sequence

os.environ.setdefault("RUST_BACKTRACE", "0")  # regorus errors stay one line


def _store_url(args: argparse.Namespace) -> str:
    from proxy.config import load_config

    return args.store or load_config(getattr(args, "config", None)).store


async def _freeze_startup_objects(app: Any) -> None:
    """Move what start-up built (modules, the app, the loaded policies: some 57,000
    objects) out of the collector's reach: each full collection traversed them
    again, 17 ms of every such pause, for objects that live as long as the process."""
    gc.collect()
    gc.freeze()


def cmd_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from proxy.app import create_app
    from proxy.config import load_config, upstream_is_self
    from proxy.errors import ConfigError

    config = load_config(
        args.config,
        overrides={
            "host": args.host, "port": args.port, "upstream": args.upstream,
            "anthropic_upstream": args.anthropic_upstream, "store": args.store, "policies": args.policies,
            "policy_engine": args.policy_engine, "opa_url": args.opa_url, "policy_mode": args.policy_mode,
            "policy_workers": args.policy_workers,
            "admin_token": args.admin_token, "fail_open": True if args.fail_open else None,
        },
    )
    looped = upstream_is_self(config)
    if looped:
        raise ConfigError(f"the {looped} ({getattr(config, looped)}) is Proctor's own address: every call would come "
                          "back to it; pass --upstream (or --anthropic-upstream) with the model API's URL (OPENAI_BASE_URL "
                          "and ANTHROPIC_BASE_URL, where agents are pointed at Proctor, are read as the upstream too)")
    try:
        import uvloop
    except ImportError:  # pragma: no cover - optional speed-up
        uvloop = None
    # Each call allocates thousands of short-lived objects (decoded events, input
    # documents): collect the youngest generation every 10,000 net allocations,
    # not every 700, so the collector stops running several times per call.
    gc.set_threshold(10_000, 20, 20)
    # Proctor logs what an operator acts on: policy loads and refused reloads,
    # engine errors, store trouble; never a line per call, never a credential.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
    banner = f"Proctor listening on http://{config.host}:{config.port}/v1 -> {config.upstream} (store {config.store})"
    app = create_app(config)
    app.on_startup.append(_freeze_startup_objects)  # after the store, policies and upstream client started
    try:
        web.run_app(
            app, host=config.host, port=config.port, print=lambda _: print(banner, flush=True),
            access_log=None, loop=uvloop.new_event_loop() if uvloop else None,
        )
    except OSError as e:  # the port is taken, or the host is not this machine's
        raise ConfigError(f"cannot listen on {config.host}:{config.port}: {e.strerror or e}; pick another --port") from None
    return 0


def cmd_sessions(args: argparse.Namespace) -> int:
    from proxy import render

    sessions = asyncio.run(_with_store(_store_url(args), lambda s: s.list_sessions(limit=args.limit + 1)))
    more, sessions = len(sessions) > args.limit, sessions[: args.limit]
    print(render.sessions_json(sessions) if args.json else render.sessions_table(sessions))
    if more:
        print(f"proctor: the newest {args.limit} sessions; --limit N shows more", file=sys.stderr)
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


def cmd_policy_init(args: argparse.Namespace) -> int:
    import shutil
    from pathlib import Path

    from proxy.errors import ConfigError
    from proxy.policy.bundle import bundled_library

    target = Path(args.dir)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(f"{target} already exists and is not an empty directory; name a new one")
    shutil.copytree(bundled_library(), target, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__init__.py", "__pycache__", "*.pyc"))
    print(f"copied the shipped library to {target}: add your rules next to it (package proctor), then\n"
          f"  proctor policy test {target}\n  proctor serve --policies {target}")
    return 0


def cmd_policy_schema(args: argparse.Namespace) -> int:
    import json

    from proxy.policy.schema import input_schema

    print(json.dumps(input_schema(), indent=2))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from proxy.demo import run_demo

    return asyncio.run(run_demo(store=args.store))


def cmd_export(args: argparse.Namespace) -> int:
    from proxy.audit.export import Progress, count_sessions, export_sessions, missing_sessions

    async def run(store: Any) -> list[str]:
        missing = await missing_sessions(store, args.session_ids)
        if missing:
            return missing
        # the bar only when the export does not go to the same terminal
        progress = Progress(len(args.session_ids) or await count_sessions(store), "export",
                            enabled=bool(args.out) or not sys.stdout.isatty())
        out = open(args.out, "wb") if args.out else sys.stdout.buffer
        try:
            await export_sessions(store, args.session_ids, args.format, out, content=args.content, progress=progress)
        finally:
            progress.close()
            out.close() if args.out else out.flush()
        return []

    try:
        missing = asyncio.run(_with_store(_store_url(args), run))
    except BrokenPipeError:  # `proctor export | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if missing:
        print(f"proctor: no session {', '.join(map(repr, missing))} in the store; `proctor sessions` lists them", file=sys.stderr)
        return 1
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    import orjson

    report = asyncio.run(_replay(args))
    for err in report.errors:
        print(f"proctor: {err}", file=sys.stderr)
    try:
        print(orjson.dumps(report.to_doc(), option=orjson.OPT_INDENT_2).decode() if args.json else report.table(), flush=True)
    except BrokenPipeError:  # `proctor replay ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 1 if report.errors else 0


async def _replay(args: argparse.Namespace) -> Any:
    from proxy.app import build_policy_point
    from proxy.audit.export import Progress, count_sessions
    from proxy.audit.replay import Replayer, ReplayReport
    from proxy.audit.replay_input import from_lines, from_store
    from proxy.config import load_config
    from proxy.errors import ConfigError

    config = load_config(args.config, overrides={"policies": args.policies, "store": args.store})
    # The policy as it would be enforced: no reload, no shadowed rules unless asked, and
    # the embedded engine (an OPA sidecar would get the tried policy pushed into it).
    config = config.model_copy(update={
        "policy_reload_interval": 0, "policy_mode": args.mode, "shadow_rules": (), "policy_engine": "embedded",
        **({"policy_window": args.window} if args.window is not None else {})})
    sources = list(args.sources)
    file = sources[0] if args.store is None and len(sources) == 1 and (
        sources[0] == "-" or os.path.isfile(sources[0]) or sources[0].endswith((".jsonl", ".json"))) else None
    point = build_policy_point(config)
    try:
        await point.start()
        report = ReplayReport(args.policies, point.revision, keep_all=args.all)
        replayer = Replayer(point, point.window)

        async def consume(item: Any, progress: Progress) -> None:
            progress.advance()
            if hasattr(item, "calls"):
                report.add(item, await replayer.replay(item))
            else:
                report.errors.append(item)

        if file is not None:
            try:
                stream = sys.stdin.buffer if file == "-" else open(file, "rb")
            except OSError as e:
                raise ConfigError(f"cannot read {file}: {e.strerror}") from None
            with stream:
                total = None
                if stream.seekable():
                    total = sum(1 for line in stream if line.strip())
                    stream.seek(0)
                progress = Progress(total, "replay")
                for item in from_lines(iter(stream)):
                    await consume(item, progress)
                progress.close()
        else:
            async def run(store: Any) -> None:
                progress = Progress(len(sources) or await count_sessions(store), "replay")
                async for item in from_store(store, sources):
                    await consume(item, progress)
                progress.close()

            await _with_store(config.store, run)
        return report
    finally:
        await point.close()


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
    """Run ``fn`` on an existing store: a command that reads must not leave an empty
    database behind where the user meant another one."""
    from proxy.errors import ConfigError
    from proxy.store import open_store
    from proxy.store.sqlite import SqliteStore
    from proxy.store.sqlite_schema import not_a_store

    store = open_store(url)
    if isinstance(store, SqliteStore):
        if not os.path.exists(store.path):
            raise ConfigError(f"no Proctor store at {os.path.abspath(store.path)}: run this where `proctor serve` "
                              "records, or pass --store sqlite:///path/to/proctor.db")
        problem = not_a_store(store.path)  # opening would migrate it: never another program's database
        if problem:
            raise ConfigError(f"{os.path.abspath(store.path)} {problem}; pass --store sqlite:///path/to/proctor.db")
    await store.open()
    try:
        return await fn(store)
    finally:
        await store.close()


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


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
    serve.add_argument("--policies", default=None, help="policy directory (PROCTOR_POLICIES, default the bundled library)")
    serve.add_argument("--policy-engine", choices=["embedded", "opa"], default=None, help="PROCTOR_POLICY_ENGINE")
    serve.add_argument("--opa-url", default=None, help="OPA server for --policy-engine opa (PROCTOR_OPA_URL)")
    serve.add_argument("--policy-workers", type=_non_negative, default=None, metavar="N",
                       help="run the embedded engine in N worker processes: a slow rule holds no other call, and "
                            "one past policy_timeout is ended (PROCTOR_POLICY_WORKERS; default 0, in process)")
    serve.add_argument("--policy-mode", choices=["enforce", "shadow"], default=None, help="PROCTOR_POLICY_MODE")
    serve.add_argument("--fail-open", action="store_true", help="let calls through when the policy engine fails")
    serve.add_argument("--admin-token", default=None, help="guards /api and /ui (PROCTOR_ADMIN_TOKEN)")
    serve.set_defaults(func=cmd_serve)

    for name, fn, text in (("sessions", cmd_sessions, "list recorded sessions"), ("show", cmd_show, "print one session's trajectory")):
        p = sub.add_parser(name, help=text)
        if name == "show":
            p.add_argument("session_id")
        p.add_argument("--store", default=env("PROCTOR_STORE"), help="store URL (default ./proctor.db)")
        p.add_argument("--config", default=None)
        p.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "sessions":
            p.add_argument("--limit", type=_non_negative, default=50, help="at most this many, newest first (default 50)")
        p.set_defaults(func=fn)

    policy = sub.add_parser("policy", help="work with policy directories").add_subparsers(dest="policy_command", required=True)
    ptest = policy.add_parser("test", help="run *_test.rego with the embedded engine (like opa test)")
    ptest.add_argument("dir", nargs="?", help="policy directory, or one *_test.rego in it (default: the bundled library)")
    ptest.add_argument("-v", "--verbose", action="store_true", help="list passing tests too")
    ptest.add_argument("-r", "--run", default=None, help="only tests whose name matches this regex")
    ptest.set_defaults(func=cmd_policy_test)
    pschema = policy.add_parser("schema", help="print the JSON Schema of the policy input")
    pschema.set_defaults(func=cmd_policy_schema)
    pinit = policy.add_parser("init", help="copy the shipped library into a new directory, to extend and serve")
    pinit.add_argument("dir", help="the directory to create (must not exist or be empty)")
    pinit.set_defaults(func=cmd_policy_init)

    export = sub.add_parser("export", help="write sessions as JSONL or OpenTelemetry (OTLP/JSON) spans")
    export.add_argument("session_ids", nargs="*", metavar="SESSION_ID", help="sessions to export (default: all)")
    export.add_argument("--store", default=env("PROCTOR_STORE"), help="store URL (default ./proctor.db)")
    export.add_argument("--config", default=None)
    export.add_argument("--format", choices=("jsonl", "otlp"), default="jsonl",
                        help="jsonl: one session per line (what replay reads); otlp: an OTLP/JSON ExportTraceServiceRequest")
    export.add_argument("--out", default=None, metavar="FILE", help="write here instead of stdout")
    export.add_argument("--content", action="store_true", help="otlp: include tool arguments and results in the spans")
    export.set_defaults(func=cmd_export)

    replay = sub.add_parser("replay", help="judge recorded sessions with a policy directory; report what would change")
    replay.add_argument("sources", nargs="*", metavar="SESSION_ID|FILE.jsonl",
                        help="session ids in the store (default: all), or one JSONL file of exported sessions or "
                             "OpenAI chat conversations ('-' reads stdin)")
    replay.add_argument("--policies", required=True, metavar="DIR", help="the policy directory to try")
    replay.add_argument("--store", default=None, help="store URL (default: PROCTOR_STORE, ./proctor.db)")
    replay.add_argument("--config", default=None)
    replay.add_argument("--mode", choices=("enforce", "shadow"), default="enforce", help="judge as enforced (default) or shadowed")
    replay.add_argument("--window", type=_non_negative, default=None, help="stored events each decision sees (default: policy_window)")
    replay.add_argument("--all", action="store_true", help="list every decision, not only the changed and the not allowed")
    replay.add_argument("--json", action="store_true", help="machine-readable output")
    replay.set_defaults(func=cmd_replay)

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
    except BrokenPipeError:  # `proctor show ID | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except sqlite3.DatabaseError as e:  # a damaged store (cut short, overwritten) while reading it
        print(f"proctor: the store could not be read ({e}); it may be damaged: restore it from a copy, "
              "or pass another --store", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
