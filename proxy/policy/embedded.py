"""The embedded engine: regorus, in-process, on the event loop's thread.

A regorus engine may only be used from the thread that created it, and it holds
the GIL while it evaluates, so a separate thread would buy no parallelism and
would cost a thread hop on every decision. The engine is therefore built and
used on the event loop's thread; an evaluation takes tens of microseconds. A
runaway policy cannot be interrupted mid-evaluation: the decision point times
it and fails closed when it took longer than the timeout. A Rust panic arrives
as ``pyo3_runtime.PanicException``, a BaseException: it is caught here and
reported as an EngineError.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any

import orjson

from proxy.policy.bundle import Bundle, PolicyError
from proxy.policy.engine import EngineError

os.environ.setdefault("RUST_BACKTRACE", "0")

_LOCATION = re.compile(r"-->\s*(\S+?):(\d+):(\d+)")


def _one_line(error: BaseException) -> str:
    text = str(error).split("Stack backtrace:", 1)[0].strip()  # RUST_BACKTRACE set by the user's shell
    return " ".join(line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("|"))


def compile_engine(bundle: Bundle, *, with_tests: bool = False) -> Any:
    """A regorus engine holding the bundle (raises PolicyError with file:line:col).

    A regorus engine must be dropped on the thread that made it, so a failed one
    is released here before the error leaves (a traceback would carry it away)."""
    import regorus

    engine = regorus.Engine()
    engine.set_rego_v0(False)
    problem = _load_into(engine, bundle, with_tests)
    if problem is not None:
        del engine
        raise PolicyError(problem)
    return engine


def _load_into(engine: Any, bundle: Bundle, with_tests: bool) -> str | None:
    modules = {**bundle.modules, **(bundle.tests if with_tests else {})}
    for rel, source in modules.items():
        try:
            engine.add_policy(str(bundle.root / rel), source)
        except BaseException as e:  # noqa: BLE001 - regorus reports parse errors as RuntimeError or panics
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            text = str(e)
            m = _LOCATION.search(text)
            where = f"{m.group(1)}:{m.group(2)}:{m.group(3)}" if m else str(bundle.root / rel)
            message = next((ln.split("error:", 1)[1].strip() for ln in text.splitlines() if "error:" in ln), _one_line(e))
            return f"{where}: {message}"
    if bundle.data:
        try:
            engine.add_data(bundle.data)
        except BaseException as e:  # noqa: BLE001
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            return f"{bundle.root}: data rejected: {_one_line(e)}"
    return None


def how_to_ask(engine: Any, query: str) -> str | None:
    """How ``query`` is evaluated: "rule" (a rule of that name, the fast path) or
    "query" (a document built by rules below it, such as ``decision.allow :=``,
    which regorus's eval_rule cannot reach). Policies that define neither (e.g. a
    package name typed wrong) get None, and are refused: every call would fail
    closed. An evaluation on an empty input tells; other errors are left for
    real inputs."""
    try:
        engine.set_input_json("{}")
        engine.eval_rule(query)
        return "rule"
    except BaseException as e:  # noqa: BLE001 - panics are BaseException
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        if "not a valid rule path" not in str(e):
            return "rule"
    return "query" if _query_value(engine, query) is not None else None


def _query_value(engine: Any, query: str) -> Any:
    """The value of ``query`` as a query; None when undefined. (As JSON: a set of
    objects, such as ``decision.warn contains {...}`` builds, has no Python form.)"""
    results = orjson.loads(engine.eval_query_as_json(query)).get("result") or []
    return results[0]["expressions"][0]["value"] if results else None


class EmbeddedEngine:
    name = "embedded"
    interruptible = False  # regorus runs to completion holding the GIL; only its duration can be judged
    times_itself = False

    def __init__(self) -> None:
        self._engine: Any = None
        self._ask = "rule"  # or "query": see how_to_ask
        self._revision = ""
        self._owner: int | None = None  # the thread that built the engine, the only one that may use it

    async def start(self) -> None:
        self._owner = threading.get_ident()

    async def close(self) -> None:
        self._engine = None  # dropped on the thread that owns it

    async def load(self, bundle: Bundle, query: str) -> None:
        self._check_thread()
        engine = compile_engine(bundle)
        how = how_to_ask(engine, query)
        if how is None:
            del engine  # dropped here, on its thread, not wherever the traceback ends up
            raise no_decision_rule(bundle, query)
        self._engine, self._ask = engine, how
        self._revision = bundle.revision

    def _check_thread(self) -> None:
        if self._owner is None:
            raise EngineError("the embedded policy engine is not started")
        if threading.get_ident() != self._owner:
            raise EngineError("the embedded policy engine was used from a thread that did not create it")

    async def evaluate(self, query: str, input_json: bytes) -> tuple[Any, str]:
        self._check_thread()
        if self._engine is None:
            raise EngineError("no policy is loaded")
        return evaluate_compiled(self._engine, self._ask, query, input_json), self._revision


def no_decision_rule(bundle: Bundle, query: str) -> PolicyError:
    package, _, rule = query.removeprefix("data.").rpartition(".")
    return PolicyError(f"{bundle.root}: the policies define no rule {query} (a module of `package {package}` "
                       f"must define `{rule}`)")


def evaluate_compiled(engine: Any, how: str, query: str, input_json: bytes) -> Any:
    """The value of ``query`` for this input (None when undefined); EngineError on any fault."""
    try:
        engine.set_input_json(input_json.decode())
        if how == "query":
            return _query_value(engine, query)
        try:
            return engine.eval_rule(query)
        except TypeError:  # a set of objects (`deny contains {...}` put in the decision as it is)
            pass  # has no Python form: as JSON it is an array, as OPA sends it
        return orjson.loads(engine.eval_rule_as_json(query))
    except BaseException as e:  # noqa: BLE001 - panics are BaseException
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        text = _one_line(e)
        if "not a valid rule path" in text:
            text = f"the loaded policies define no rule {query}"
        raise EngineError(f"policy evaluation failed: {text}") from None
