"""The input document stays bounded: the trajectory keeps ``window`` events
before the reply, texts outside the judged events are cut, and the decision log
points at exactly the events the policy saw."""

from __future__ import annotations

import asyncio
from pathlib import Path

from adapters.model import Call, EventKind, TrajectoryEvent
from proxy.policy.embedded import EmbeddedEngine
from proxy.policy.point import PolicyPoint, SessionView
from proxy.policy.schema import PolicyInput
from proxy.store.base import SessionRecord


def point(tmp_path: Path, window: int, text_limit: int) -> PolicyPoint:
    (tmp_path / "p.rego").write_text('package proctor\nimport rego.v1\ndecision := {"allow": true}\n')
    return PolicyPoint(EmbeddedEngine(), policies=tmp_path, query="data.proctor.decision", mode="enforce",
                       shadow_rules=(), fail_open=False, timeout=5, reload_interval=0, window=window,
                       text_limit=text_limit)


def result(i: int, text: str) -> TrajectoryEvent:
    return TrajectoryEvent(kind=EventKind.TOOL_RESULT, text=text, tool_name="read", tool_call_id=f"c{i}")


def view(stored: int) -> SessionView:
    record = SessionRecord(id="s", started=0.0, last_call=0.0, calls=1, events=stored, status="active")
    window = [TrajectoryEvent(kind=EventKind.USER, text=f"stored {i} " + "x" * 50, seq=i) for i in range(stored - 4, stored)]
    return SessionView(record, window, {})


CALL = Call(api="chat", model="m", stream=False, history=())
CLIENT = {"key_id": None, "agent": None, "user_agent": None}


def test_request_stage_keeps_new_texts_whole_and_cuts_the_trajectory(tmp_path: Path) -> None:
    p = point(tmp_path, window=3, text_limit=10)
    new = [result(i, f"result {i} " + "y" * 40) for i in range(2)]
    doc = p.build_input("request", view(100), "s", new, [], None, CALL, CLIENT)
    PolicyInput.model_validate(doc)
    assert [e["seq"] for e in doc["trajectory"]] == [99, 100, 101]  # the last stored event, then the two new ones
    assert all(len(e["text"]) == 10 and e["text_length"] > 10 for e in doc["trajectory"])
    assert [e["text"] for e in doc["new"]] == [ev.text for ev in new]  # judged here: whole
    assert all("text_length" not in e for e in doc["new"])


def test_action_stage_appends_the_reply_and_cuts_new_texts(tmp_path: Path) -> None:
    p = point(tmp_path, window=3, text_limit=10)
    new = [result(i, "z" * 30) for i in range(5)]  # more new events than the window holds
    earlier = TrajectoryEvent(kind=EventKind.TOOL_CALL, tool_name="a", arguments={}, tool_call_id="r0")
    action = TrajectoryEvent(kind=EventKind.TOOL_CALL, tool_name="send", arguments={"body": "w" * 30}, tool_call_id="r1",
                             text="t" * 30)
    doc = p.build_input("action", view(100), "s", new, [earlier], action, CALL, CLIENT)
    PolicyInput.model_validate(doc)
    assert [e["seq"] for e in doc["trajectory"]] == [102, 103, 104, 105]  # 3 of the new ones, then the reply's call
    assert doc["trajectory"][-1]["tool_name"] == "a"
    assert [len(e["text"]) for e in doc["new"]] == [10] * 5
    assert doc["action"]["seq"] == 106 and doc["action"]["text"] == "t" * 30  # the judged action is whole
    assert doc["action"]["arguments"] == {"body": "w" * 30} and "arguments_cut" not in doc["action"]


def test_long_strings_in_the_trajectorys_arguments_are_cut(tmp_path: Path) -> None:
    p = point(tmp_path, window=3, text_limit=10)
    big = TrajectoryEvent(kind=EventKind.TOOL_CALL, tool_name="write_file", tool_call_id="w",
                          arguments={"path": "a.py", "content": "x" * 5000, "lines": ["y" * 50, "short"], "n": 3})
    small = TrajectoryEvent(kind=EventKind.TOOL_CALL, tool_name="read_file", tool_call_id="r", arguments={"path": "a.py"})
    doc = p.build_input("action", view(100), "s", [], [big, small], big, CALL, CLIENT)
    PolicyInput.model_validate(doc)
    cut, kept = doc["trajectory"][-2], doc["trajectory"][-1]
    assert cut["arguments"] == {"path": "a.py", "content": "x" * 10, "lines": ["y" * 10, "short"], "n": 3}
    assert cut["arguments_cut"] is True and "arguments_cut" not in kept
    assert kept["arguments"] is small.arguments  # nothing to cut: not copied
    assert doc["action"]["arguments"]["content"] == "x" * 5000  # the judged call is whole


def test_zero_text_limit_keeps_everything_and_zero_window_keeps_only_the_reply(tmp_path: Path) -> None:
    p = point(tmp_path, window=0, text_limit=0)
    new = [result(0, "q" * 5000)]
    doc = p.build_input("action", view(10), "s", new, [], None, CALL, CLIENT)
    assert doc["trajectory"] == [] and doc["new"][0]["text"] == "q" * 5000


def test_decision_log_range_is_what_the_policy_saw(tmp_path: Path) -> None:
    p = point(tmp_path, window=3, text_limit=10)

    async def judge() -> tuple[int, int]:
        await p.start()
        try:
            rec = await p.judge("request", view(100), "s", "c", [result(0, "a")], [], None, CALL, {})
            return rec.trajectory_range
        finally:
            await p.close()

    assert asyncio.run(judge()) == (98, 101)


def test_past_new_limit_new_holds_the_start_and_the_end_and_says_how_many_it_left_out(tmp_path: Path) -> None:
    p = point(tmp_path, window=3, text_limit=10)
    p.new_limit = 8
    new = [result(i, f"r{i}") for i in range(30)]
    v = view(stored=0)
    for stage in ("request", "action"):
        doc = p.build_input(stage, v, "s", new, [], None, CALL, CLIENT)
        assert [e["text"] for e in doc["new"]] == ["r0", "r1", *[f"r{i}" for i in range(24, 30)]]
        assert [e["seq"] for e in doc["new"]][-1] == 29  # the events keep their real positions
        assert doc["new_omitted"] == 22 and doc["new_omitted_tools"] == ["read"]
        assert [e["text"] for e in doc["trajectory"]] == ["r27", "r28", "r29"]
        PolicyInput.model_validate(doc)
    small = p.build_input("request", view(stored=0), "s", new[:8], [], None, CALL, CLIENT)
    assert small["new_omitted"] == 0 and small["new_omitted_tools"] == [] and len(small["new"]) == 8
