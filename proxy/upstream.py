"""The one HTTP client every call goes upstream through.

Requests are forwarded as they came (same body bytes, same headers less the
hop-by-hop ones); credentials are replaced only when an upstream key is
configured. Connection failures and timeouts become :class:`UpstreamUnavailable`
and :class:`UpstreamTimeout`; any HTTP status the upstream answers is the
upstream's to give and passes through.
"""

from __future__ import annotations

import asyncio
from typing import Mapping

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.config import ProxyConfig
from proxy.errors import UpstreamTimeout, UpstreamUnavailable

# Headers that describe one hop, not the message, plus those aiohttp recomputes.
_HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer",
        "Transfer-Encoding", "Upgrade", "Host", "Content-Length", "Accept-Encoding", "Content-Encoding",
    )
)


def forwardable(headers: Mapping[str, str]) -> CIMultiDict[str]:
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in _HOP_BY_HOP)


class UpstreamClient:
    def __init__(self, config: ProxyConfig) -> None:
        self._config = config
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._config.max_connections, ttl_dns_cache=300, keepalive_timeout=60)
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._config.connect_timeout, sock_read=self._config.read_timeout
        )
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=True, skip_auto_headers=("User-Agent",)
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def target(self, api: str, path: str, query: str) -> str:
        """The upstream URL for a ``/v1/...`` path: Anthropic's API for ``messages``."""
        base = self._config.anthropic_upstream if api == "messages" else self._config.upstream
        url = base.rstrip("/") + path.removeprefix("/v1")
        return f"{url}?{query}" if query else url

    def headers(self, api: str, incoming: CIMultiDictProxy[str]) -> CIMultiDict[str]:
        out = forwardable(incoming)
        out["Accept-Encoding"] = "identity"  # we read what we forward; compression buys nothing on this hop
        if api == "messages" and self._config.anthropic_api_key:
            out.popall("Authorization", None)
            out["x-api-key"] = self._config.anthropic_api_key
        elif api != "messages" and self._config.upstream_api_key:
            out.popall("x-api-key", None)
            out["Authorization"] = f"Bearer {self._config.upstream_api_key}"
        return out

    async def send(self, method: str, url: str, headers: CIMultiDict[str], body: bytes | None) -> aiohttp.ClientResponse:
        """Start the upstream request; the caller reads (or streams) and releases the response."""
        assert self._session is not None, "UpstreamClient.start() was not awaited"
        try:
            return await self._session.request(method, url, headers=headers, data=body, allow_redirects=False)
        except asyncio.TimeoutError:
            raise UpstreamTimeout(
                f"the upstream at {url} did not answer within {self._config.read_timeout:g}s; "
                "raise read_timeout or check the upstream"
            ) from None
        except aiohttp.ClientError as e:
            matches = [flag for flag, base in (("--upstream", self._config.upstream), ("--anthropic-upstream", self._config.anthropic_upstream))
                       if url.startswith(base.rstrip("/"))]
            setting = " / ".join(matches) or "--upstream"
            raise UpstreamUnavailable(f"cannot reach the upstream at {url}: {e}; check {setting}") from None


async def read_body(resp: aiohttp.ClientResponse, read_timeout: float) -> bytes:
    """Read a whole upstream body, turning faults into our errors."""
    try:
        return await resp.read()
    except asyncio.TimeoutError:
        raise UpstreamTimeout(f"the upstream stopped sending for {read_timeout:g}s") from None
    except aiohttp.ClientError as e:
        raise UpstreamUnavailable(f"the upstream connection broke while reading the response: {e}") from None
