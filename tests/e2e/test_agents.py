"""Agent frameworks run multi-step tool-calling tasks through Proctor: the
OpenAI Agents SDK (over chat completions and over responses) and a LangChain
tool loop. The scripted upstream plays the model, deciding each step by how many
tool results the conversation already holds."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from proxy.scripted_model import ToolCallSpec, Turn

from .conftest import calls_of, events_of, sessions_of, shape

KEY = "sk-client-e2e-agents-0123456789"
TASK = "What is the temperature in Paris and in Berlin, and what is their sum?"
TEMPS = {"Paris": 21, "Berlin": 17}
FINAL = "Paris is 21, Berlin is 17; together 38."


def _tool_results(api: str, body: dict[str, Any]) -> list[str]:
    if api == "chat":
        return [m["content"] for m in body["messages"] if m.get("role") == "tool"]
    items = body["input"] if isinstance(body.get("input"), list) else []
    return [i["output"] for i in items if i.get("type") == "function_call_output"]


def planner(api: str, body: dict[str, Any]) -> Turn:
    """Step 1: two weather lookups at once; step 2: add them; step 3: answer."""
    results = _tool_results(api, body)
    if not results:
        return Turn(tool_calls=(
            ToolCallSpec("get_temperature", {"city": "Paris"}),
            ToolCallSpec("get_temperature", {"city": "Berlin"}),
        ))
    if len(results) == 2:
        a, b = (int(str(r).strip('"')) for r in results)
        return Turn(text="Now the sum.", tool_calls=(ToolCallSpec("add", {"a": a, "b": b}),))
    return Turn(text=FINAL)


EXPECTED = [
    ("user", TASK),
    ("tool_call", ("get_temperature", {"city": "Paris"})),
    ("tool_call", ("get_temperature", {"city": "Berlin"})),
    ("tool_result", ("get_temperature", "21")),
    ("tool_result", ("get_temperature", "17")),
    ("assistant", "Now the sum."),
    ("tool_call", ("add", {"a": 21, "b": 17})),
    ("tool_result", ("add", "38")),
    ("assistant", FINAL),
]


def _one_session(proxy: Any, n_calls: int) -> str:
    (session,) = sessions_of(proxy)
    calls = calls_of(proxy, session.id)
    assert len(calls) == n_calls and all(c.status == 200 and c.error is None for c in calls)
    assert [c.resolved_by for c in calls] == ["new"] + ["history"] * (n_calls - 1)
    events = events_of(proxy, session.id)
    assert [e.seq for e in events] == list(range(len(events)))
    return session.id


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_openai_agents_sdk(api: str, proxy: Any, upstream: Any) -> None:
    import agents
    from openai import AsyncOpenAI

    agents.set_tracing_disabled(True)
    upstream.answer(planner)
    ran: list[tuple[str, Any]] = []

    @agents.function_tool
    def get_temperature(city: str) -> int:
        """The current temperature of a city, in Celsius."""
        ran.append(("get_temperature", city))
        return TEMPS[city]

    @agents.function_tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        ran.append(("add", (a, b)))
        return a + b

    async def go() -> str:
        client = AsyncOpenAI(base_url=proxy.url, api_key=KEY, max_retries=0, timeout=10)
        model_cls = agents.OpenAIChatCompletionsModel if api == "chat" else agents.OpenAIResponsesModel
        agent = agents.Agent(
            name="weather",
            instructions="Use the tools.",
            model=model_cls(model="gpt-test", openai_client=client),
            tools=[get_temperature, add],
        )
        try:
            result = await agents.Runner.run(agent, TASK, max_turns=6)
        finally:
            await client.close()
        return str(result.final_output)

    final = asyncio.run(go())

    assert final == FINAL
    assert sorted(ran[:2]) == [("get_temperature", "Berlin"), ("get_temperature", "Paris")]
    assert ran[2:] == [("add", (21, 17))]
    assert [r.path for r in upstream.received] == [f"/v1/{'chat/completions' if api == 'chat' else 'responses'}"] * 3
    session_id = _one_session(proxy, 3)
    assert shape(events_of(proxy, session_id)) == [("system", "Use the tools."), *EXPECTED]


@pytest.mark.parametrize("streaming", [False, True], ids=["json", "stream"])
def test_langchain_tool_loop(streaming: bool, proxy: Any, upstream: Any) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    upstream.answer(planner)
    ran: list[tuple[str, Any]] = []

    @tool
    def get_temperature(city: str) -> int:
        """The current temperature of a city, in Celsius."""
        ran.append(("get_temperature", city))
        return TEMPS[city]

    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        ran.append(("add", (a, b)))
        return a + b

    tools = {t.name: t for t in (get_temperature, add)}
    llm = ChatOpenAI(
        model="gpt-test", base_url=proxy.url, api_key=KEY, max_retries=0, timeout=10, streaming=streaming
    ).bind_tools(list(tools.values()))
    messages: list[Any] = [HumanMessage(TASK)]
    for _ in range(6):
        ai = llm.invoke(messages)
        messages.append(ai)
        if not ai.tool_calls:
            break
        for call in ai.tool_calls:
            output = tools[call["name"]].invoke(call["args"])
            messages.append(ToolMessage(content=json.dumps(output), tool_call_id=call["id"]))

    assert ai.content == FINAL
    assert ran == [("get_temperature", "Paris"), ("get_temperature", "Berlin"), ("add", (21, 17))]
    bodies = [r.json() for r in upstream.received]
    assert len(bodies) == 3 and all(b.get("stream", False) is streaming for b in bodies)
    session_id = _one_session(proxy, 3)
    assert shape(events_of(proxy, session_id)) == EXPECTED
    assert all(c.stream is streaming for c in calls_of(proxy, session_id))
