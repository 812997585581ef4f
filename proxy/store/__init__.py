"""Session stores behind one contract (:mod:`proxy.store.base`)."""

from __future__ import annotations

from proxy.errors import ConfigError
from proxy.store.base import SessionStore


def open_store(url: str) -> SessionStore:
    """Build (not yet open) the store a URL names: ``sqlite:///path.db`` (or a bare path); other
    schemes (``postgresql://``: no PostgreSQL store is built yet) are a ConfigError."""
    if url.startswith("sqlite:") or "://" not in url:
        from proxy.store.sqlite import SqliteStore

        return SqliteStore.from_url(url if url.startswith("sqlite:") else f"sqlite:///{url}")
    raise ConfigError(f"unsupported store URL {url!r}: use sqlite:///path/to/proctor.db")
