"""The scripted model of the session benchmark: deterministic on a request's
content (a hash of the conversation, ignoring tool-call ids), like a
temperature-0 model, and steered by a ``[[next:ACTION]]`` marker at the end of
the last message an agent sends (tool, parallel:N, common, spawn:N, summarize,
final)."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson

from proxy.scripted_model import ToolCallSpec, Turn

Json = dict[str, Any]


_DIRECTIVE = re.compile(r"\[\[next:([a-z_]+)(?::(\d+))?\]\]")
TOOL_NAMES = ("read_file", "run_shell", "grep", "list_dir", "write_file")


def _digest(obj: Any) -> str:
    return hashlib.blake2b(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS), digest_size=16).hexdigest()


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, dict):
                if isinstance(part.get("text"), str):
                    out.append(part["text"])
                elif part.get("type") == "tool_result":
                    out.append(_text(part.get("content")))
        return "".join(out)
    return ""


def _args(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw
    return raw


def conversation(api: str, body: Json) -> tuple[list[Any], str]:
    """The request's conversation in a canonical form (no ids), and its last message's text."""
    canon: list[Any] = []
    last = ""
    if api == "chat":
        for m in body.get("messages") or []:
            calls = [[c["function"]["name"], _args(c["function"]["arguments"])] for c in m.get("tool_calls") or []]
            canon.append([m.get("role"), _text(m.get("content")), calls])
            last = _text(m.get("content"))
    elif api == "responses":
        canon.append(["instructions", body.get("instructions") or "", body.get("previous_response_id") or ""])
        items = body.get("input")
        items = [{"role": "user", "content": items}] if isinstance(items, str) else items or []
        for it in items:
            kind = it.get("type", "message")
            if kind == "function_call":
                canon.append(["fc", it.get("name"), _args(it.get("arguments"))])
                last = ""
            elif kind == "function_call_output":
                canon.append(["out", _text(it.get("output"))])
                last = _text(it.get("output"))
            else:
                canon.append([it.get("role"), _text(it.get("content"))])
                last = _text(it.get("content"))
    else:  # messages
        canon.append(["system", _text(body.get("system"))])
        for m in body.get("messages") or []:
            content = m.get("content")
            blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
            canon.append([m.get("role"), [
                ["u", b.get("name"), b.get("input")] if b.get("type") == "tool_use" else
                ["r", _text(b.get("content"))] if b.get("type") == "tool_result" else ["x", b.get("text", "")]
                for b in blocks
            ]])
            last = _text(content)
    return canon, last


def subtask_text(h: str, i: int) -> str:
    return (
        f"Sub-task {h[:12]}/{i}: investigate the failing integration test in package pkg_{h[12:18]}, "
        f"find the root cause, list the files involved with line numbers, and propose a minimal patch. "
        f"Report back in at most ten lines."
    )


def responder(api: str, body: Json) -> Turn:
    canon, last = conversation(api, body)
    h = _digest(canon)
    found = _DIRECTIVE.findall(last)
    action, n = found[-1] if found else ("tool", "")
    if action == "final":
        return Turn(text=f"Final answer {h[:16]}: the task is complete; see the changes above.")
    if action == "summarize":
        return Turn(text=f"Summary {h[:16]}: inspected the repository, ran the tests, narrowed the bug to "
                         f"module m_{h[16:22]}; next, patch it and re-run the suite.")
    if action == "common":  # what many agents run at some point: the same call in every session
        return Turn(tool_calls=(ToolCallSpec("run_shell", {"cmd": "pytest -q"}),))
    if action == "spawn":
        calls = tuple(ToolCallSpec("run_subagent", {"task": subtask_text(h, i)}) for i in range(int(n or 1)))
        return Turn(tool_calls=calls)
    k = int(n or 2) if action == "parallel" else 1
    calls = tuple(
        ToolCallSpec(TOOL_NAMES[int(h[2 * i:2 * i + 2], 16) % len(TOOL_NAMES)],
                     {"path": f"src/{h[i:i + 10]}.py", "pattern": h[20 + i:26 + i], "step": len(canon)})
        for i in range(k)
    )
    text = f"Looking at {h[:8]} next." if int(h[-1], 16) < 5 else None
    return Turn(text=text, tool_calls=calls)
