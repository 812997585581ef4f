"""The history tree: each prefix of a history is a node whose id chains the
previous node with the next event's canonical hash, so equal prefixes have equal
node ids and the path from the root to a node is exactly one history."""

from __future__ import annotations

import hashlib
from typing import Iterable, Sequence

from adapters.model import Call, TrajectoryEvent

ROOT = ""


def chain(events: Iterable[TrajectoryEvent], start: str = ROOT) -> list[str]:
    """Node ids after each event, starting below ``start``."""
    nodes = []
    node = start
    for ev in events:
        node = hashlib.blake2b(f"{node}:{ev.hash}".encode(), digest_size=16).hexdigest()
        nodes.append(node)
    return nodes


def nodes_of(call: Call, prior: Call | None = None) -> tuple[str, ...]:
    """Node ids after each event of ``call.history``. When the call continues
    ``prior``'s history list (adapters/resend.py) and starts with the same events
    before it, ``prior``'s nodes are its first ones: only the new events are hashed."""
    if prior is not None and prior.listed is not None and call.listed is not None and prior.nodes \
            and len(prior.nodes) == len(prior.history) and _same_head(call, prior):
        k = len(prior.history)
        return prior.nodes + tuple(chain(call.history[k:], start=prior.nodes[-1]))
    return tuple(chain(call.history))


def _same_head(call: Call, prior: Call) -> bool:
    """Whether the events before the list (a system prompt, instructions) are the same."""
    assert call.listed is not None and prior.listed is not None
    head, before = call.history[: call.listed.head], prior.history[: prior.listed.head]
    return len(head) == len(before) and all(a.hash == b.hash for a, b in zip(head, before))


def of_call(call: Call) -> Sequence[str]:
    """Node ids after each event of ``call.history``, from the root: the ones the
    decoder computed (``call.nodes``) when it did."""
    return call.nodes if len(call.nodes) == len(call.history) else chain(call.history)
