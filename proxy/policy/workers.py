"""The embedded engine in child processes (``policy_workers`` > 0).

In process, regorus runs on the event loop's thread and holds the interpreter
lock until it is done: a rule that takes seconds holds every other call, and a
timeout can only be noticed afterwards. Here each of N worker processes holds
the compiled policies; an evaluation is a message on the worker's pipe, so the
event loop serves other calls meanwhile, N evaluations run at once (on N cores),
and one that outlives ``policy_timeout`` is ended by killing its worker, whose
place a fresh one takes with the same policies.

The pipe carries frames: a 4-byte big-endian length, then one byte saying what
the frame is and its payload:

    parent -> worker   L + {"root", "modules", "data", "revision", "query"}   load
                       V + query + NUL + input JSON                          evaluate
    worker -> parent   O (loaded)   R + result JSON   E + error message

The worker is ``python -m proxy.policy.workers``: it compiles with the same
functions as the in-process engine (``proxy.policy.embedded``), so the two give
the same decisions.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import struct
import sys
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from proxy.policy.bundle import Bundle, PolicyError
from proxy.policy.engine import EngineError

_LENGTH = struct.Struct(">I")
log = logging.getLogger("proctor.policy")


class _Worker:
    """One child process and its pipe; used by one evaluation at a time."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def spawn(cls) -> _Worker:
        env = {**os.environ, "RUST_BACKTRACE": "0"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy.policy.workers", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, env=env,
        )
        return cls(proc)

    async def ask(self, kind: bytes, payload: bytes) -> tuple[bytes, bytes]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(_LENGTH.pack(len(payload) + 1) + kind + payload)
            await self.proc.stdin.drain()
            (size,) = _LENGTH.unpack(await self.proc.stdout.readexactly(_LENGTH.size))
            frame = await self.proc.stdout.readexactly(size)
        except (asyncio.IncompleteReadError, OSError, RuntimeError):  # it died (killed, out of memory): its pipe broke
            raise EngineError(f"the policy worker (pid {self.proc.pid}) exited ({self.proc.returncode})") from None
        return frame[:1], frame[1:]

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()

    async def stop(self) -> None:
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()  # the worker ends at the end of its input
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except asyncio.TimeoutError:
                self.kill()
                await self.proc.wait()


class WorkerEngine:
    """The :class:`~proxy.policy.engine.PolicyEngine` of ``policy_workers`` > 0."""

    name = "embedded-workers"
    interruptible = True  # evaluate() awaits a pipe: cancelling it kills the worker, which is replaced
    times_itself = True  # the timeout counts the evaluation, not the wait for a free worker

    def __init__(self, workers: int, timeout: float) -> None:
        self.size = workers
        self.timeout = timeout
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._all: set[_Worker] = set()
        self._load: bytes | None = None  # the load frame of the serving bundle, for replacements
        self._revision = ""
        self._loading = asyncio.Lock()
        self._replacing: set[asyncio.Task[None]] = set()
        self._closed = False

    async def start(self) -> None:
        for _ in range(self.size):
            worker = await _Worker.spawn()
            self._all.add(worker)
            self._idle.put_nowait(worker)

    async def close(self) -> None:
        self._closed = True
        for task in self._replacing:
            task.cancel()
        await asyncio.gather(*self._replacing, return_exceptions=True)
        workers, self._all = self._all, set()
        await asyncio.gather(*(w.stop() for w in workers))

    async def load(self, bundle: Bundle, query: str) -> None:
        frame = orjson.dumps({"root": str(bundle.root), "modules": bundle.modules, "data": bundle.data,
                              "revision": bundle.revision, "query": query})
        async with self._loading:  # calls wait meanwhile: every live worker switches before any serves again
            workers: list[_Worker] = []
            try:
                while len(workers) < len(self._all) or not workers:  # (a worker being replaced loads on arrival)
                    workers.append(await self._idle.get())
                kind, message = await workers[0].ask(b"L", frame)  # one refuses a broken bundle for all
                if kind == b"E":
                    raise PolicyError(message.decode())
                self._load = frame  # a worker replaced meanwhile starts with this bundle
                for worker in workers[1:]:
                    kind, message = await worker.ask(b"L", frame)
                    if kind == b"E":  # pragma: no cover - the first worker compiled the same bundle
                        raise EngineError(f"a policy worker refused what another compiled: {message.decode()}")
                self._revision = bundle.revision
            finally:
                for worker in workers:
                    self._idle.put_nowait(worker)

    async def evaluate(self, query: str, input_json: bytes) -> tuple[Any, str]:
        worker = await self._idle.get()
        try:
            kind, payload = await asyncio.wait_for(worker.ask(b"V", query.encode() + b"\0" + input_json), self.timeout)
        except asyncio.TimeoutError:
            self._retire(worker)
            raise EngineError(f"policy evaluation took longer than {self.timeout:g}s") from None
        except BaseException:  # cancelled (the client left), or the worker died: it is not reused
            self._retire(worker)
            raise
        self._idle.put_nowait(worker)
        if kind == b"E":
            raise EngineError(payload.decode())
        return orjson.loads(payload), self._revision

    def _retire(self, worker: _Worker) -> None:
        """Kill a worker that cannot be trusted with the next evaluation and start its successor."""
        worker.kill()
        self._all.discard(worker)
        task = asyncio.get_running_loop().create_task(self._replace())
        self._replacing.add(task)
        task.add_done_callback(self._replacing.discard)

    async def _replace(self) -> None:
        """A fresh worker with the serving policies, retried until one starts (a spawn can
        fail under load, out of file descriptors say: the pool must not stay short)."""
        pause = 0.1
        while not self._closed:
            worker: _Worker | None = None
            try:
                worker = await _Worker.spawn()
                if self._load is not None:
                    kind, message = await worker.ask(b"L", self._load)
                    if kind == b"E":
                        raise EngineError(message.decode())
            except (OSError, EngineError) as e:
                if worker is not None:
                    worker.kill()
                log.error("could not start a policy worker (%s); retrying in %.1fs", e, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)
                continue
            if self._closed:  # closed while it started
                await worker.stop()
                return
            self._all.add(worker)
            self._idle.put_nowait(worker)
            return


# ---- the worker process ---------------------------------------------------------


def _serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    """Answer frames until the parent closes the pipe."""
    from proxy.policy.embedded import compile_engine, evaluate_compiled, how_to_ask, no_decision_rule

    engine: Any = None
    how = "rule"
    while header := stdin.read(_LENGTH.size):
        (size,) = _LENGTH.unpack(header)
        frame = stdin.read(size)
        kind, payload = frame[:1], frame[1:]
        try:
            if kind == b"L":
                spec = orjson.loads(payload)
                bundle = Bundle(Path(spec["root"]), spec["modules"], {}, spec["data"], spec["revision"])
                candidate = compile_engine(bundle)
                found = how_to_ask(candidate, spec["query"])
                if found is None:
                    raise no_decision_rule(bundle, spec["query"])
                engine, how = candidate, found
                reply = b"O"
            else:
                query, _, input_json = payload.partition(b"\0")
                if engine is None:
                    raise EngineError("no policy is loaded")
                value = evaluate_compiled(engine, how, query.decode(), input_json)
                reply = b"R" + orjson.dumps(value, default=list, option=orjson.OPT_NON_STR_KEYS)
        except (PolicyError, EngineError) as e:
            reply = b"E" + e.message.encode()
        except Exception as e:  # noqa: BLE001 - anything else fails this decision closed, not the worker
            reply = b"E" + f"policy worker: {type(e).__name__}: {e}".encode()
        stdout.write(_LENGTH.pack(len(reply)) + reply)
        stdout.flush()


def _die_with_parent() -> None:
    """End this worker when the proxy ends, even mid-evaluation (a SIGKILLed proxy closes
    no pipe until regorus is done); the proxy handles Ctrl-C for both."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


if __name__ == "__main__":  # pragma: no cover - run by WorkerEngine
    _die_with_parent()
    try:
        _serve(sys.stdin.buffer, sys.stdout.buffer)
    except (BrokenPipeError, ConnectionResetError):  # the proxy went away mid-answer
        pass
