"""``proctor export``: JSONL that replay reads back, and OTLP/JSON that the
OpenTelemetry protobuf ``ExportTraceServiceRequest`` parses, with the GenAI
attributes and the parent/child links of model and tool call spans."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from proxy.audit import otlp
from proxy.cli import main
from proxy.scripted_model import Fault, ToolCallSpec, Turn
from tests.audit.test_replay import STRICT_RULE, changes, client, policy_dir, record_sessions, replay_json


def export(capsys: Any, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["export", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def attrs(span: Any) -> dict[str, Any]:
    def value(v: Any) -> Any:
        kind = v.WhichOneof("value")
        if kind == "array_value":
            return [value(x) for x in v.array_value.values]
        return getattr(v, kind)

    return {a.key: value(a.value) for a in span.attributes}


def parse_otlp(text: str) -> ExportTraceServiceRequest:
    """OTLP/JSON carries ids as hex, where protobuf's JSON mapping expects base64:
    collectors decode them as hex, so do that before the protobuf parser sees them."""
    doc = json.loads(text)
    for rs in doc["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for span in ss["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
                for link in span.get("links", []):
                    for key in ("traceId", "spanId"):
                        link[key] = base64.b64encode(bytes.fromhex(link[key])).decode()
    return json_format.Parse(json.dumps(doc), ExportTraceServiceRequest())


def test_jsonl_has_one_line_per_session_and_replays_like_the_store(
    make_proxy: Any, upstream: Any, capsys: Any, tmp_path: Path,
) -> None:
    proxy = record_sessions(make_proxy, upstream, tmp_path)
    out = tmp_path / "sessions.jsonl"
    code, stdout, _ = export(capsys, "--store", proxy.config.store, "--out", str(out))
    assert code == 0 and stdout == ""
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(d["session"]["id"] for d in lines) == ["calm", "inj-json", "inj-stream"]
    inj = next(d for d in lines if d["session"]["id"] == "inj-json")
    assert inj["version"] == 1 and set(inj) == {"version", "session", "calls", "events", "decisions"}
    assert len(inj["calls"]) == 2 and [e["seq"] for e in inj["events"]] == list(range(len(inj["events"])))
    assert any(d["outcome"] == "deny" for d in inj["decisions"])
    # named sessions only, to stdout, in the order given
    code, stdout, _ = export(capsys, "--store", proxy.config.store, "calm", "inj-json")
    assert [json.loads(line)["session"]["id"] for line in stdout.splitlines()] == ["calm", "inj-json"]

    strict = policy_dir(tmp_path / "strict", {"strict.rego": STRICT_RULE})
    _, from_store = replay_json(capsys, "--policies", str(strict), "--store", proxy.config.store)
    _, from_file = replay_json(capsys, "--policies", str(strict), str(out))
    assert from_file["errors"] == [] and from_file["summary"] == from_store["summary"]
    assert changes(from_file) == changes(from_store) and len(changes(from_file)) == 2


def test_otlp_parses_and_carries_the_genai_conventions(make_proxy: Any, upstream: Any, capsys: Any, tmp_path: Path) -> None:
    proxy = record_sessions(make_proxy, upstream, tmp_path)
    code, text, _ = export(capsys, "--store", proxy.config.store, "--format", "otlp", "inj-json", "calm")
    assert code == 0
    json_format.Parse(text, ExportTraceServiceRequest())  # as it is, the protobuf parser takes it
    request = parse_otlp(text)
    (resource,) = request.resource_spans
    assert attrs(resource.resource)["service.name"] == "proctor"
    spans = list(resource.scope_spans[0].spans)
    assert all(len(s.trace_id) == 16 and len(s.span_id) == 8 for s in spans)
    by_id = {s.span_id: s for s in spans}

    models = [s for s in spans if attrs(s).get("gen_ai.operation.name") == "chat"]
    tools = [s for s in spans if attrs(s).get("gen_ai.operation.name") == "execute_tool"]
    assert len(models) == 3 and [s.name for s in tools] == ["execute_tool fetch_url", "execute_tool read_file", "execute_tool send_email"]
    first = attrs(models[0])
    assert models[0].name == "chat m" and models[0].kind == models[0].SPAN_KIND_CLIENT
    assert first["gen_ai.provider.name"] == first["gen_ai.system"] == "openai"
    assert first["gen_ai.request.model"] == "m" and first["gen_ai.conversation.id"] == "inj-json"
    assert first["gen_ai.response.id"] and first["gen_ai.usage.input_tokens"] > 0 and first["gen_ai.usage.output_tokens"] > 0
    assert first["http.response.status_code"] == 200 and "error.type" not in first
    assert models[0].trace_id.hex() == otlp.trace_id("inj-json") != models[2].trace_id.hex()

    for tool in tools:  # each tool call under the model call that asked for it
        parent = by_id[tool.parent_span_id]
        assert attrs(parent)["gen_ai.operation.name"] == "chat" and parent.trace_id == tool.trace_id
        assert tool.kind == tool.SPAN_KIND_INTERNAL and attrs(tool)["gen_ai.tool.call.id"]
        assert tool.start_time_unix_nano >= parent.end_time_unix_nano
    fetch, read, email = (attrs(t) for t in tools)
    assert by_id[tools[0].parent_span_id] is models[0] and by_id[tools[2].parent_span_id] is models[1]
    assert fetch["gen_ai.tool.name"] == "fetch_url" and fetch["proctor.decision.outcome"] == "allow"
    assert tools[0].end_time_unix_nano == models[1].start_time_unix_nano  # until its result came back
    assert read["proctor.decision.outcome"] == "allow" and read["proctor.decision.rules"] == []
    assert email["proctor.decision.outcome"] == "deny" and email["proctor.decision.rules"] == ["flow.untrusted_to_external"]
    assert email["error.type"] == "policy_denied" and tools[2].status.code == tools[2].status.STATUS_CODE_ERROR
    assert "gen_ai.tool.call.arguments" not in email  # content only when asked for
    assert any(e.name == "proctor.decision" for e in models[1].events)

    _, again, _ = export(capsys, "--store", proxy.config.store, "--format", "otlp", "inj-json", "calm")
    assert again == text  # deterministic: the same session gives the same trace
    _, with_content, _ = export(capsys, "--store", proxy.config.store, "--format", "otlp", "--content", "inj-json")
    email = next(attrs(s) for s in parse_otlp(with_content).resource_spans[0].scope_spans[0].spans if s.name.endswith("send_email"))
    assert "attacker@evil.example" in email["gen_ai.tool.call.arguments"]


def test_otlp_marks_failed_calls_and_links_sub_agents(make_proxy: Any, upstream: Any, capsys: Any, tmp_path: Path) -> None:
    task = "Research the staging database configuration and report its port"

    def model(api: str, body: dict[str, Any]) -> Turn | Fault:
        last = body["messages"][-1]
        if last["content"] == "plan the release":
            return Turn(tool_calls=(ToolCallSpec("run_subagent", {"task": task}),))
        if last["content"] == "fail please":
            return Fault(status=500)
        return Turn(text="port 6432")

    upstream.answer(model)
    proxy = make_proxy(policies=str(policy_dir(tmp_path / "base")))
    with client(proxy) as c:
        raw = c.chat.completions.with_raw_response.create(model="m", messages=[{"role": "user", "content": "plan the release"}])
        parent = raw.headers["x-proctor-session"]
        raw = c.chat.completions.with_raw_response.create(model="m", messages=[{"role": "user", "content": task}])
        child = raw.headers["x-proctor-session"]
        with pytest.raises(Exception):
            c.chat.completions.create(model="m", messages=[{"role": "user", "content": "fail please"}],
                                      extra_headers={"X-Proctor-Session": "failing"})
    assert proxy.call_store(lambda s: s.get_session(child)).parent_id == parent
    code, text, _ = export(capsys, "--store", proxy.config.store, "--format", "otlp")
    assert code == 0
    spans = list(parse_otlp(text).resource_spans[0].scope_spans[0].spans)
    failed = next(s for s in spans if attrs(s)["gen_ai.conversation.id"] == "failing")
    assert failed.status.code == failed.status.STATUS_CODE_ERROR and attrs(failed)["error.type"] == "500"
    assert attrs(failed)["http.response.status_code"] == 500
    spawn = next(s for s in spans if s.name == "execute_tool run_subagent")
    first_of_child = next(s for s in spans if s.trace_id.hex() == otlp.trace_id(child))
    (link,) = first_of_child.links
    assert (link.trace_id, link.span_id) == (spawn.trace_id, spawn.span_id)
    assert attrs(first_of_child)["proctor.session.parent_id"] == parent


def test_unknown_session_exits_1_with_nothing_written(make_proxy: Any, upstream: Any, capsys: Any, tmp_path: Path) -> None:
    proxy = record_sessions(make_proxy, upstream, tmp_path)
    out = tmp_path / "x.jsonl"
    code, stdout, err = export(capsys, "--store", proxy.config.store, "--out", str(out), "calm", "ses_missing")
    assert code == 1 and stdout == "" and not out.exists()
    assert "ses_missing" in err and "proctor sessions" in err


def test_all_sessions_are_streamed_page_by_page(make_proxy: Any, upstream: Any, tmp_path: Path, monkeypatch: Any) -> None:
    """Keyset paging over the whole store: every session once, none twice."""
    from proxy.audit import export as export_module
    from proxy.store import open_store

    proxy = record_sessions(make_proxy, upstream, tmp_path)
    monkeypatch.setattr(export_module, "_PAGE", 2)

    async def ids() -> list[str]:
        store = open_store(proxy.config.store)
        await store.open()
        try:
            return [sid async for sid in export_module.all_session_ids(store)]
        finally:
            await store.close()

    assert sorted(asyncio.run(ids())) == ["calm", "inj-json", "inj-stream"]
