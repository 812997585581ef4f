"""An OPA server as the engine (sidecar deployments), over its REST API.

``load`` pushes the bundle's modules (``PUT /v1/policies/{id}``) and data
(``PUT /v1/data/{key}``) unless the server manages its own bundles
(``push=False``); ``evaluate`` asks ``POST /v1/data/{path}``.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from proxy.policy.bundle import Bundle, PolicyError
from proxy.policy.engine import EngineError


class OpaEngine:
    name = "opa"
    interruptible = True
    times_itself = False

    def __init__(self, url: str, *, push: bool = True, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.push = push
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._http: aiohttp.ClientSession | None = None
        self._revision = ""

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(timeout=self._timeout)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def load(self, bundle: Bundle, query: str) -> None:
        if not self.push:
            self._revision = "opa-managed"
            return
        assert self._http is not None
        try:
            for rel, source in bundle.modules.items():
                async with self._http.put(f"{self.url}/v1/policies/proctor/{rel}", data=source.encode(),
                                          headers={"Content-Type": "text/plain"}) as resp:
                    if resp.status != 200:
                        body = await resp.json(content_type=None)
                        errors = body.get("errors") or [body]
                        first = errors[0]
                        loc = first.get("location") or {}
                        where = f"{bundle.root / rel}:{loc.get('row', 0)}:{loc.get('col', 0)}"
                        raise PolicyError(f"{where}: {first.get('message', body.get('message', 'rejected by OPA'))}")
            for key, value in bundle.data.items():
                async with self._http.put(f"{self.url}/v1/data/{key}", data=orjson.dumps(value),
                                          headers={"Content-Type": "application/json"}) as resp:
                    if resp.status not in (200, 204):
                        raise PolicyError(f"OPA rejected data.{key}: HTTP {resp.status}")
        except aiohttp.ClientError as e:
            raise PolicyError(f"cannot reach OPA at {self.url}: {e}") from None
        self._revision = bundle.revision

    async def evaluate(self, query: str, input_json: bytes) -> tuple[Any, str]:
        assert self._http is not None
        path = query.removeprefix("data.").replace(".", "/")
        try:
            async with self._http.post(f"{self.url}/v1/data/{path}", data=b'{"input":' + input_json + b"}",
                                       headers={"Content-Type": "application/json"}) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise EngineError(f"OPA answered {resp.status}: {body[:300].decode('utf-8', 'replace')}")
        except aiohttp.ClientError as e:
            raise EngineError(f"cannot reach OPA at {self.url}: {e}") from None
        except TimeoutError:
            raise EngineError(f"OPA at {self.url} did not answer in time") from None
        return orjson.loads(body).get("result"), self._revision
