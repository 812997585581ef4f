"""The benchmark's reference: the floor of a Python proxy.

A minimal aiohttp pass-through: it reads the request body, forwards it (with
the request's end-to-end headers) over one shared ``aiohttp.ClientSession`` to
the upstream, and returns the bytes; event streams are relayed chunk by chunk.
No parsing, no recording. Proctor's overhead is compared with this one's.

    python tests/bench/passthrough_server.py --port 9001 --upstream http://127.0.0.1:9000/v1
"""

from __future__ import annotations

import argparse
from typing import AsyncIterator

import aiohttp
from aiohttp import web

_HOP = frozenset(
    h.lower()
    for h in (
        "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer",
        "Transfer-Encoding", "Upgrade", "Host", "Content-Length",
    )
)
SESSION = web.AppKey("session", aiohttp.ClientSession)


def create_app(upstream: str) -> web.Application:
    base = upstream.rstrip("/")
    app = web.Application(client_max_size=64 * 1024 * 1024)

    async def client(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=256, keepalive_timeout=60)
        app[SESSION] = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=None, sock_read=600), auto_decompress=False
        )
        yield
        await app[SESSION].close()

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        url = base + request.path.removeprefix("/v1") + (f"?{request.query_string}" if request.query_string else "")
        async with app[SESSION].request(request.method, url, data=body, headers=headers) as up:
            ctype = up.headers.get("Content-Type", "application/octet-stream")
            if ctype.startswith("text/event-stream"):
                resp = web.StreamResponse(status=up.status, headers={"Content-Type": ctype})
                await resp.prepare(request)
                async for chunk in up.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
                return resp
            data = await up.read()
            return web.Response(status=up.status, body=data, headers={"Content-Type": ctype})

    app.cleanup_ctx.append(client)
    app.router.add_get("/healthz", healthz)
    app.router.add_route("*", "/v1/{tail:.*}", forward)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:9000/v1")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        uvloop = None
    web.run_app(
        create_app(args.upstream), host=args.host, port=args.port, print=None, access_log=None,
        loop=uvloop.new_event_loop() if uvloop else None,
    )


if __name__ == "__main__":
    main()
