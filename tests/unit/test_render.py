"""How ``proctor show`` prints one event's labels: strings bare, the rest as JSON."""

from __future__ import annotations

from adapters.model import EventKind, TrajectoryEvent
from proxy.render import _event_line


def test_labels_print_as_json_not_python_reprs() -> None:
    ev = TrajectoryEvent(kind=EventKind.TOOL_CALL, tool_name="send_email", arguments={"to": "x@y.z"}, seq=3,
                         labels={"denied": [{"rule": "flow.untrusted_to_external", "message": "no"}], "mode": "enforce",
                                 "orphan": True})
    line = _event_line(ev)
    assert '[denied=[{"rule":"flow.untrusted_to_external","message":"no"}], mode=enforce, orphan=true]' in line
    assert "'rule'" not in line and "True" not in line
