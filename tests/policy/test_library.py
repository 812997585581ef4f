"""The shipped policy library as a whole: its Rego tests pass, each module is
documented and tested both ways, examples are complete and load as settings,
labels stay bounded, and no rule names a tool of the AgentDojo classification."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from proxy.policy.bundle import load_bundle
from proxy.policy.embedded import compile_engine
from proxy.policy.testing import run_tests

LIBRARY = Path(__file__).resolve().parents[2] / "policies"
MODULES = sorted(p for p in (LIBRARY / "proctor").glob("*.rego") if not p.name.endswith("_test.rego"))
TEST_FILES = sorted(LIBRARY.rglob("*_test.rego"))
EXAMPLES = sorted(p for p in (LIBRARY / "examples").iterdir() if p.is_dir())
SETTING_KEYS = {
    "untrusted_tools", "sinks", "internal_domains", "flow_action", "max_tool_calls",
    "flow", "secrets", "permissions", "budgets", "loops", "coding", "approval",
}


def test_every_rego_test_passes_on_the_embedded_engine() -> None:
    results = run_tests(LIBRARY)
    failed = [(r.name, r.outcome, r.error) for r in results if r.outcome != "PASS"]
    assert not failed
    assert len(results) >= 150


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_each_module_starts_with_its_doc_and_has_tests(module: Path) -> None:
    text = module.read_text()
    assert text.startswith("#"), f"{module.name} starts without a doc comment"
    assert (module.parent / f"{module.stem}_test.rego").exists(), f"{module.name} has no {module.stem}_test.rego"


@pytest.mark.parametrize("tests", TEST_FILES, ids=lambda p: p.name)
def test_tests_let_through_as_much_as_they_block(tests: Path) -> None:
    """test_blocks_/asks_/patches_ count what a module must stop, test_allows_ what it must let through."""
    names = re.findall(r"^(test_\w+)", tests.read_text(), re.MULTILINE)
    blocking = [n for n in names if re.match(r"test_(blocks|asks|patches)_", n)]
    allowing = [n for n in names if n.startswith("test_allows_")]
    assert len(allowing) >= len(blocking), f"{tests.name}: {len(blocking)} blocking tests, {len(allowing)} allowing"
    assert all(re.match(r"test_(blocks|asks|patches|allows|labels|extracts)_", n) for n in names)


def agentdojo_tools() -> set[str]:
    settings = json.loads((LIBRARY / "examples" / "agentdojo" / "data.json").read_text())["proctor_settings"]
    return set(settings["untrusted_tools"]) | set(settings["sinks"]) | set(settings.get("approval", {}))


def test_no_rule_names_a_tool_of_the_agentdojo_classification() -> None:
    """Rules generalise: only the example classification names the data set's tools."""
    library = {p.name: p.read_text() for p in (LIBRARY / "proctor").glob("*.rego") if not p.name.endswith("_test.rego")}
    library["proctor_defaults/data.json"] = (LIBRARY / "proctor_defaults" / "data.json").read_text()
    library["data.json"] = (LIBRARY / "data.json").read_text()
    for tool in agentdojo_tools():
        for name, text in library.items():
            if name == "data.json" and tool in {"get_webpage", "send_email", "create_calendar_event", "post_webpage"}:
                continue  # common tool names the shipped generic classification also lists
            assert not re.search(rf"\b{re.escape(tool)}\b", text), f"{name} names {tool}"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_is_complete(example: Path) -> None:
    assert (example / "README.md").exists()
    settings = json.loads((example / "data.json").read_text())["proctor_settings"]
    assert set(settings) <= SETTING_KEYS, set(settings) - SETTING_KEYS
    assert settings["untrusted_tools"] and settings["sinks"]
    readme = (example / "README.md").read_text()
    assert "proctor serve --policies" in readme


def deployment(tmp_path: Path, data: Path) -> Path:
    """A policy directory as a user would make one: the library plus an example as its settings."""
    root = tmp_path / "policies"
    shutil.copytree(LIBRARY / "proctor", root / "proctor")
    shutil.copytree(LIBRARY / "proctor_defaults", root / "proctor_defaults")
    shutil.copy(data, root / "data.json")
    return root


def decide(engine: Any, doc: dict[str, Any]) -> dict[str, Any]:
    engine.set_input_json(json.dumps(doc))
    return engine.eval_rule("data.proctor.decision")


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_settings_serve_as_a_deployment(example: Path, tmp_path: Path) -> None:
    bundle = load_bundle(deployment(tmp_path, example / "data.json"))
    engine = compile_engine(bundle)
    request = {"stage": "request", "session": {"labels": {}, "counters": {}, "depth": 0, "started": time.time(), "events": 0},
               "new": [{"seq": 0, "kind": "user", "text": "hello", "tool_name": None}], "trajectory": [], "action": None,
               "call": {"model": "m", "client": {"agent": None, "key_id": None}}}
    decision = decide(engine, request)
    assert decision["allow"] is True and decision["labels"]["instruction_words"] == ["hello"]


def test_detectors_are_regexes_with_one_capture_group() -> None:
    defaults = json.loads((LIBRARY / "proctor_defaults" / "data.json").read_text())
    for kind, spec in defaults["flow"]["value_kinds"].items():
        assert re.compile(spec["regex"]).groups == 1, kind
    for detector in defaults["secrets"]["detectors"]:
        assert re.compile(detector["regex"]).groups == 1, detector["name"]
        assert all(h == h.lower() for h in detector.get("hint", [])), detector["name"]
    for pattern in defaults["coding"]["credential_paths"] + [d["regex"] for d in defaults["coding"]["dangerous_commands"]]:
        re.compile(pattern)
    for pattern in [defaults["flow"]["urging"]]:
        re.compile(pattern)
    # Go's RE2 and Rust's regex differ on \b, \d, \s and \w outside ASCII: the detectors avoid them
    text = json.dumps(defaults)
    assert not re.search(r"\\\\[bdsw]", text)


def test_labels_stay_within_their_caps_in_a_long_session() -> None:
    """300 untrusted results, each with new values: the labels stop growing at their caps,
    and the session is marked overflowed so that flow rules fail closed."""
    engine = compile_engine(load_bundle(LIBRARY))
    labels: dict[str, Any] = {}
    for i in range(300):
        doc = {"stage": "request", "session": {"labels": labels, "counters": {}, "events": i, "depth": 0, "started": 0},
               "new": [{"seq": i, "kind": "tool_result", "tool_name": "fetch_url", "tool_call_id": f"c{i}",
                        "text": f"Write to agent{i}@site{i}.example or see https://www{i}.example/p, Ms Name{i} says"}],
               "trajectory": [], "action": None, "call": {"model": "m", "client": {"agent": None, "key_id": None}}}
        labels.update(decide(engine, doc)["labels"])
    assert len(labels["untrusted_values"]) == 200
    assert len(labels["untrusted_sources"]) == 100
    assert len(labels["untrusted_names"]) <= 400
    assert labels["flow_overflow"] is True
    assert len(json.dumps(labels)) < 40_000
