"""The embedded engine: regorus, in-process.

A regorus engine may only be used from the thread that created it, and it holds
the GIL while it evaluates. So one dedicated thread owns the engine and runs
every compile and evaluation in turn; the event loop waits on a future, which
also gives evaluations a timeout. A Rust panic arrives as
``pyo3_runtime.PanicException``, a BaseException: it is caught here and
reported as an EngineError, never allowed to kill the thread.
"""

from __future__ import annotations

import asyncio
import os
import queue
import re
import threading
from typing import Any, Callable

from proxy.policy.bundle import Bundle, PolicyError
from proxy.policy.engine import EngineError

os.environ.setdefault("RUST_BACKTRACE", "0")

_LOCATION = re.compile(r"-->\s*(\S+?):(\d+):(\d+)")


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    return " ".join(line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("|"))


def compile_engine(bundle: Bundle, *, with_tests: bool = False) -> Any:
    """A regorus engine holding the bundle (raises PolicyError with file:line:col)."""
    import regorus

    engine = regorus.Engine()
    engine.set_rego_v0(False)
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
            raise PolicyError(f"{where}: {message}") from None
    if bundle.data:
        try:
            engine.add_data(bundle.data)
        except BaseException as e:  # noqa: BLE001
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            raise PolicyError(f"{bundle.root}: data rejected: {_one_line(e)}") from None
    return engine


class EmbeddedEngine:
    name = "embedded"

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.Future[Any]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._engine: Any = None  # touched only on the engine thread
        self._revision = ""

    async def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="proctor-regorus", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 5)
            self._thread = None

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, fut = job
            try:
                ok, value = True, fn()
            except BaseException as e:  # noqa: BLE001 - panics are BaseException; keep the thread alive
                if isinstance(e, (KeyboardInterrupt, SystemExit)):
                    raise
                ok, value = False, e
            fut.get_loop().call_soon_threadsafe(_settle, fut, ok, value)

    def _submit(self, fn: Callable[[], Any]) -> asyncio.Future[Any]:
        if self._thread is None:
            raise EngineError("the embedded policy engine is not started")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._jobs.put((fn, fut))
        return fut

    async def load(self, bundle: Bundle) -> None:
        def swap() -> None:
            self._engine = compile_engine(bundle)
            self._revision = bundle.revision

        await self._submit(swap)

    async def evaluate(self, query: str, input_json: bytes) -> tuple[Any, str]:
        def run() -> tuple[Any, str]:
            if self._engine is None:
                raise EngineError("no policy is loaded")
            self._engine.set_input_json(input_json.decode())
            try:
                return self._engine.eval_rule(query), self._revision
            except BaseException as e:  # noqa: BLE001
                if isinstance(e, (KeyboardInterrupt, SystemExit)):
                    raise
                text = _one_line(e)
                if "not a valid rule path" in text:
                    text = f"the loaded policies define no rule {query}"
                raise EngineError(f"policy evaluation failed: {text}") from None

        try:
            return await self._submit(run)
        except EngineError:
            raise
        except Exception as e:
            raise EngineError(f"policy evaluation failed: {_one_line(e)}") from None


def _settle(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.done():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)
