"""proxy/redact.py: a call's credentials never reach the store, wherever they were echoed."""

from __future__ import annotations

from adapters.model import EventKind, TrajectoryEvent
from proxy.redact import redact_events

KEY = "sk-live-Secret/with+odd=chars_0123456789"


def test_texts_arguments_and_labels_are_redacted_and_hashes_kept() -> None:
    events = [
        TrajectoryEvent(kind=EventKind.USER, text="nothing here"),
        TrajectoryEvent(kind=EventKind.TOOL_CALL, tool_name="shell", arguments={"command": f"export K={KEY}"},
                        labels={"denied": [{"rule": "secrets.leak", "message": f"blocked `export K={KEY}`"}]}),
        TrajectoryEvent(kind=EventKind.TOOL_RESULT, text=f"echo: {KEY}", tool_name="shell"),
        TrajectoryEvent(kind=EventKind.TOOL_CALL, tool_name="custom", arguments=f"free text {KEY}"),
    ]
    redacted = redact_events(events, [KEY])
    assert redacted is not None and redacted[0] is events[0]  # untouched events are the same objects
    assert KEY not in repr(redacted) and "[redacted]" in redacted[1].labels["denied"][0]["message"]
    assert redacted[1].arguments == {"command": "export K=[redacted]"} and redacted[3].arguments == "free text [redacted]"
    assert all(r.labels.get("redacted") for r in redacted[1:])
    assert [r.hash for r in redacted] == [e.hash for e in events]  # later calls still match what was sent
    assert redact_events(events[:1], [KEY]) is None
