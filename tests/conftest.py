"""Shared fixtures: a scripted model upstream and a Proctor proxy, both real
aiohttp servers on 127.0.0.1, running in a background thread's event loop so
sync and async SDK clients can both talk to them from the test."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web

from proxy.app import create_app
from proxy.config import ProxyConfig
from proxy.context import PROXY
from proxy.scripted_model import RECEIVED, Fault, ReceivedRequest, Responder, Turn, create_model_app, echo_responder

os.environ.setdefault("RUST_BACKTRACE", "0")
T = TypeVar("T")


class LoopThread:
    """An event loop in a daemon thread; ``run`` executes a coroutine there and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-servers", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


async def start_app(app: web.Application, **kw: Any) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0, **kw)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


@contextmanager
def chat_upstream(loop: LoopThread, handler: Callable[[web.Request], Coroutine[Any, Any, web.StreamResponse]]) -> Iterator[str]:
    """A hand-written upstream whose ``POST /v1/chat/completions`` is ``handler``
    (for replies the scripted model does not make); yields its ``/v1`` URL."""
    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner, base = loop.run(start_app(app))
    try:
        yield base + "/v1"
    finally:
        loop.run(runner.cleanup())


class Upstream:
    """The scripted model; tests swap what it answers with :meth:`answer`."""

    def __init__(self, loop: LoopThread) -> None:
        self._responder: Responder = echo_responder
        self.app = create_model_app(lambda api, body: self._responder(api, body), chunks=5)
        # handler_cancellation: when the proxy gives up on a slow answer (a timeout
        # test), the scripted answer is not built later, in the middle of another test.
        self.runner, base = loop.run(start_app(self.app, handler_cancellation=True))
        self.url = base + "/v1"

    def answer(self, responder: Responder | Turn | Fault) -> None:
        if isinstance(responder, (Turn, Fault)):
            fixed = responder
            responder = lambda api, body: fixed  # noqa: E731
        self._responder = responder

    @property
    def received(self) -> list[ReceivedRequest]:
        return self.app[RECEIVED]


class RunningProxy:
    def __init__(self, loop: LoopThread, config: ProxyConfig) -> None:
        self.loop = loop
        self.config = config
        self.app = create_app(config)
        self.runner, self.base = loop.run(start_app(self.app))
        self.url = self.base + "/v1"

    @property
    def store(self) -> Any:
        return self.app[PROXY].store

    def call_store(self, fn: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
        """Run a store coroutine on the proxy's loop (the store lives there)."""
        return self.loop.run(fn(self.store))

    def close(self) -> None:
        self.loop.run(self.runner.cleanup())


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.stop()


@pytest.fixture(scope="session")
def upstream(loop_thread: LoopThread) -> Iterator[Upstream]:
    up = Upstream(loop_thread)
    yield up
    loop_thread.run(up.runner.cleanup())


@pytest.fixture
def make_proxy(loop_thread: LoopThread, upstream: Upstream, tmp_path: Path) -> Iterator[Callable[..., RunningProxy]]:
    started: list[RunningProxy] = []

    def make(**settings: Any) -> RunningProxy:
        settings.setdefault("upstream", upstream.url)
        settings.setdefault("anthropic_upstream", upstream.url)
        settings.setdefault("store", f"sqlite:///{tmp_path / f'proctor{len(started)}.db'}")
        proxy = RunningProxy(loop_thread, ProxyConfig(**settings))
        started.append(proxy)
        return proxy

    yield make
    for p in started:
        p.close()


@pytest.fixture
def proxy(make_proxy: Callable[..., RunningProxy], upstream: Upstream) -> RunningProxy:
    upstream.answer(echo_responder)
    upstream.received.clear()
    return make_proxy()
