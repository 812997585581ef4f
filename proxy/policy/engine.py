"""The contract every policy engine fulfils (embedded regorus, an OPA server)."""

from __future__ import annotations

from typing import Any, Protocol

from proxy.errors import ProctorError
from proxy.policy.bundle import Bundle


class EngineError(ProctorError):
    """Evaluation failed (runtime error, panic, timeout, unreachable server)."""

    code = "policy_engine_error"


class PolicyEngine(Protocol):
    name: str
    # True when evaluate() awaits something (a server) and can be cancelled at the
    # timeout; False for an in-process engine that runs to completion on the loop.
    interruptible: bool
    # True when the engine ends an evaluation at policy_timeout itself, counting the
    # evaluation only (not the wait for a free worker): the decision point then neither
    # cancels it nor judges its duration.
    times_itself: bool

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def load(self, bundle: Bundle, query: str) -> None:
        """Compile and switch to ``bundle``, whose ``query`` (e.g. ``data.proctor.decision``)
        evaluate() will be asked for; on failure raise PolicyError and keep serving
        the previous bundle."""

    async def evaluate(self, query: str, input_json: bytes) -> tuple[Any, str]:
        """The value of ``query`` (e.g. ``data.proctor.decision``) for this input (None
        when undefined), and the revision of the bundle that made it. Raises
        EngineError."""
