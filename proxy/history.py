"""The history tree: each prefix of a history is a node whose id chains the
previous node with the next event's canonical hash, so equal prefixes have equal
node ids and the path from the root to a node is exactly one history."""

from __future__ import annotations

import hashlib
from typing import Iterable

from adapters.model import TrajectoryEvent

ROOT = ""


def chain(events: Iterable[TrajectoryEvent], start: str = ROOT) -> list[str]:
    """Node ids after each event, starting below ``start``."""
    nodes = []
    node = start
    for ev in events:
        node = hashlib.blake2b(f"{node}:{ev.hash}".encode(), digest_size=16).hexdigest()
        nodes.append(node)
    return nodes
