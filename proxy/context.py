"""The long-lived parts of a running proxy, built once in ``create_app`` and kept
under one typed app key."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from adapters.resend import ResendCache
from proxy.approvals import Approvals
from proxy.config import ProxyConfig
from proxy.policy.point import PolicyPoint
from proxy.sessions import SessionResolver
from proxy.store.base import SessionStore
from proxy.upstream import UpstreamClient


@dataclass(frozen=True, slots=True)
class Proxy:
    config: ProxyConfig
    store: SessionStore
    upstream: UpstreamClient
    sessions: SessionResolver
    policy: PolicyPoint
    approvals: Approvals
    resend: ResendCache  # recent request bodies, for the next call that re-sends their history


PROXY = web.AppKey("proxy", Proxy)
