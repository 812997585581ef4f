"""``policy_workers``: the embedded engine in child processes. The same decisions as in
process; a slow rule holds no other call and is ended at ``policy_timeout``; a broken
reload keeps every worker on the last good revision."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.policy.test_enforcement import _revision, client, injected_agent, run_agent, write_policy

SLOW = """package proctor
import rego.v1

slow_requested if {
	some ev in input.new
	contains(ev.text, "take your time")
}

# about a microsecond per number on regorus: seconds for this range
spin := count([x | some x in numbers.range(1, 20000000); x % 7 == 0])

decision := {"allow": spin >= 0} if slow_requested else := {"allow": true}
"""


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_the_library_decides_in_workers_as_in_process(make_proxy: Any, upstream: Any, stream: bool) -> None:
    upstream.answer(injected_agent)
    proxy = make_proxy(policy_workers=2)
    _, replies, _ = run_agent(proxy, stream)
    second = replies[1].choices[0].message
    assert [tc.function.name for tc in second.tool_calls or []] == ["read_file"]
    assert "flow.untrusted_to_external" in (second.content or "")
    sid = proxy.call_store(lambda s: s.list_sessions(limit=1))[0].id
    assert proxy.call_store(lambda s: s.get_session(sid)).labels["untrusted_source"]["tool"] == "fetch_url"


def test_a_slow_rule_holds_no_other_call_and_ends_at_the_timeout(make_proxy: Any, upstream: Any, tmp_path: Path) -> None:
    root = write_policy(tmp_path / "slow", SLOW)
    proxy = make_proxy(policies=str(root), policy_workers=2, policy_timeout=1.0)
    outcome: dict[str, Any] = {}

    def slow_call() -> None:
        started = time.monotonic()
        with client(proxy) as c:
            try:
                c.chat.completions.create(model="m", messages=[{"role": "user", "content": "take your time"}])
            except openai.PermissionDeniedError as e:
                outcome["error"] = str(e)
        outcome["seconds"] = time.monotonic() - started

    slow = threading.Thread(target=slow_call)
    slow.start()
    time.sleep(0.3)  # the slow evaluation is under way in one worker
    served_during = []
    with client(proxy) as c:
        for _ in range(3):
            assert httpx.get(proxy.base + "/healthz", timeout=5).status_code == 200
            reply = c.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
            served_during.append((reply.choices[0].message.content, "seconds" not in outcome))
    slow.join(30)
    assert all(during for _, during in served_during), "the other calls were answered while the slow one ran"
    assert "proctor.engine_error" in outcome["error"] and "longer than 1s" in outcome["error"]
    assert outcome["seconds"] < 5  # ended at the timeout, not when the rule would have finished
    with client(proxy) as c:  # the killed worker was replaced, with the same policies
        for _ in range(4):
            assert c.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}]).choices
        with pytest.raises(openai.PermissionDeniedError):
            c.chat.completions.create(model="m", messages=[{"role": "user", "content": "take your time"}])


def test_a_broken_reload_keeps_every_worker_on_the_last_good_revision(make_proxy: Any, upstream: Any, tmp_path: Path) -> None:
    root = write_policy(tmp_path / "p", 'package proctor\nimport rego.v1\ndecision := {"allow": true}\n')
    proxy = make_proxy(policies=str(root), policy_workers=2, policy_reload_interval=0.1)
    good = _revision(proxy)
    (root / "policy.rego").write_text("package proctor\nimport rego.v1\ndecision := {\n")
    time.sleep(0.5)
    assert _revision(proxy) == good
    with client(proxy) as c:
        for _ in range(3):
            assert c.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}]).choices
    (root / "policy.rego").write_text('package proctor\nimport rego.v1\n'
                                      'decision := {"allow": false, "deny": [{"rule": "all.no", "message": "closed"}]}\n')
    deadline = time.time() + 5
    while _revision(proxy) == good and time.time() < deadline:
        time.sleep(0.05)
    with client(proxy) as c:
        for _ in range(3):  # every worker switched
            with pytest.raises(openai.PermissionDeniedError, match="all.no"):
                c.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])


def test_a_worker_killed_from_outside_fails_one_decision_closed_and_is_replaced(make_proxy: Any, upstream: Any) -> None:
    """Out of memory, say: its pipe breaks. The call gets the engine's error in the API's shape
    (not a 500), and the pool is whole again for the next calls."""
    import os
    import signal

    from proxy.context import PROXY

    proxy = make_proxy(policy_workers=1)
    engine = proxy.app[PROXY].policy.engine
    (worker,) = engine._all
    os.kill(worker.proc.pid, signal.SIGKILL)
    time.sleep(0.3)
    with client(proxy) as c:
        with pytest.raises(openai.PermissionDeniedError, match="proctor.engine_error"):
            c.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        deadline = time.time() + 20
        while True:
            try:
                assert c.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}]).choices
                break
            except openai.PermissionDeniedError:
                assert time.time() < deadline, "the worker was never replaced"
                time.sleep(0.2)
    assert len(engine._all) == 1 and worker not in engine._all


def test_a_call_waiting_for_a_free_worker_is_not_timed_out_for_the_wait(make_proxy: Any, upstream: Any,
                                                                         tmp_path: Path) -> None:
    """policy_timeout counts an evaluation, not the wait for a worker: with the only worker busy
    on a slow rule, a harmless call waits its turn and is judged, not refused (nor let through
    unjudged with fail_open)."""
    root = write_policy(tmp_path / "slow", SLOW)
    proxy = make_proxy(policies=str(root), policy_workers=1, policy_timeout=1.0)
    results: dict[str, Any] = {}

    def call(name: str, text: str) -> None:
        with client(proxy) as c:
            try:
                results[name] = c.chat.completions.create(model="m", messages=[{"role": "user", "content": text}]).choices
            except openai.PermissionDeniedError as e:
                results[name] = str(e)

    threads = [threading.Thread(target=call, args=(name, text))
               for name, text in (("slow 1", "take your time"), ("slow 2", "take your time"), ("fast", "hi"))]
    for thread in threads:  # the fast call waits behind two slow evaluations, over 2 s in all
        thread.start()
        time.sleep(0.1)
    for thread in threads:
        thread.join(30)
    assert "longer than 1s" in results["slow 1"] and "longer than 1s" in results["slow 2"]
    assert isinstance(results["fast"], list), results["fast"]


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads child processes from /proc (Linux)")
def test_workers_end_with_the_proxy_even_mid_evaluation(tmp_path: Path, upstream: Any) -> None:
    """A SIGKILLed proxy closes its pipes, but a worker busy in regorus would read them
    only when done: it is ended with its parent instead; and a SIGTERM mid-evaluation
    shuts down without a traceback."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    root = write_policy(tmp_path / "slow", SLOW)

    def children(pid: int) -> set[int]:
        found: set[int] = set()
        for task in Path(f"/proc/{pid}/task").iterdir():
            found |= {int(c) for c in (task / "children").read_text().split()}
        return found

    for sig in (signal.SIGKILL, signal.SIGTERM):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        log = tmp_path / f"serve-{sig.name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "proxy", "serve", "--port", str(port), "--upstream", upstream.url,
                 "--store", f"sqlite:///{tmp_path}/{sig.name}.db", "--policies", str(root), "--policy-workers", "1"],
                stdout=out, stderr=subprocess.STDOUT,  # killed: a long timeout; stopped: the call ends first
                env={**os.environ, "PROCTOR_POLICY_TIMEOUT": "30" if sig is signal.SIGKILL else "3"})
        try:
            deadline = time.time() + 30
            while time.time() < deadline:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            (worker,) = children(proc.pid)
            def slow_call() -> None:
                try:
                    httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=30,
                               json={"model": "m", "messages": [{"role": "user", "content": "take your time"}]})
                except httpx.HTTPError:  # the killed proxy answers nothing
                    pass

            busy = threading.Thread(target=slow_call)
            busy.start()
            time.sleep(1.0)  # the worker is deep in the slow rule
            proc.send_signal(sig)
            proc.wait(30)
            busy.join(30)
            deadline = time.time() + 5
            while Path(f"/proc/{worker}").exists() and time.time() < deadline:
                time.sleep(0.1)
            assert not Path(f"/proc/{worker}").exists(), f"the worker outlived a {sig.name}"
            assert "Traceback" not in log.read_text(), log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
