"""``create_app`` builds everything a running proxy holds; nothing happens at import."""

from __future__ import annotations

import functools
from typing import AsyncIterator

from aiohttp import web

from adapters.registry import ADAPTERS, ENFORCERS
from adapters.resend import ResendCache
from proxy import api as admin_api
from proxy.audit import ui as audit_ui
from proxy.approvals import Approvals
from proxy.calls import error_response, handle_model_call
from proxy.incoming import body_too_large
from proxy.config import ProxyConfig
from proxy.context import PROXY, Proxy
from proxy.errors import ProctorError
from proxy.passthrough import handle_passthrough
from proxy.policy.embedded import EmbeddedEngine
from proxy.policy.engine import PolicyEngine
from proxy.policy.opa import OpaEngine
from proxy.policy.workers import WorkerEngine
from proxy.policy.point import PolicyPoint
from proxy.sessions import SessionResolver
from proxy.store import open_store
from proxy.upstream import UpstreamClient

MODEL_ROUTES = {
    "/v1/chat/completions": "chat",
    "/v1/responses": "responses",
    "/v1/messages": "messages",
}


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@web.middleware
async def errors_middleware(request: web.Request, handler):  # type: ignore[no-untyped-def]
    """Whatever goes wrong in a handler answers in the API's own error shape; the
    server keeps serving."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status == 413:
            return error_response(None, body_too_large(request.app[PROXY].config.max_body_bytes), None)
        raise
    except ProctorError as err:
        return error_response(None, err, None)


def build_policy_point(config: ProxyConfig) -> PolicyPoint:
    engine: PolicyEngine
    if config.policy_engine == "opa":
        engine = OpaEngine(config.opa_url)
    elif config.policy_workers:
        engine = WorkerEngine(config.policy_workers, config.policy_timeout)
    else:
        engine = EmbeddedEngine()
    return PolicyPoint(
        engine, policies=config.policies, query=config.policy_query, mode=config.policy_mode,
        shadow_rules=config.shadow_rules, fail_open=config.fail_open, timeout=config.policy_timeout,
        reload_interval=config.policy_reload_interval, window=config.policy_window, text_limit=config.policy_text_limit,
        new_limit=config.policy_new_limit,
    )


def create_app(config: ProxyConfig) -> web.Application:
    app = web.Application(client_max_size=config.max_body_bytes, middlewares=[errors_middleware])
    store = open_store(config.store)
    upstream = UpstreamClient(config)
    policy = build_policy_point(config)
    app[PROXY] = Proxy(
        config=config, store=store, upstream=upstream, sessions=SessionResolver(store, config),
        policy=policy, approvals=Approvals(config.approval_timeout),
        resend=ResendCache(max_bytes=config.resend_cache_mb * 1024 * 1024),
    )

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await store.open()
        try:
            await policy.start()  # a policy that does not compile stops the start, naming file:line:col
            await upstream.start()
            yield
        finally:
            await upstream.close()
            await policy.close()
            await store.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/healthz", healthz)
    for path, api in MODEL_ROUTES.items():
        app.router.add_post(path, functools.partial(handle_model_call, adapter=ADAPTERS[api], enforcer=ENFORCERS[api]))
    admin_api.add_routes(app)
    audit_ui.add_routes(app)
    app.router.add_route("*", "/v1/{tail:.*}", handle_passthrough)
    return app
