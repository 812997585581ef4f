"""The rule the README teaches works as it says, next to the shipped library."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from proxy.policy.bundle import load_bundle
from proxy.policy.embedded import compile_engine

ROOT = Path(__file__).resolve().parents[2]


def readme_rule() -> str:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```rego\n(.*?)```", text, flags=re.S)
    (rule,) = [b for b in blocks if "payments.limit" in b]
    return rule


@pytest.mark.parametrize(("amount", "denied"), [(5000, True), ("5000", True), (5, False), ("5", False), ("lots", False), ("0500", False)])
def test_the_readme_payment_rule(tmp_path: Path, amount: object, denied: bool) -> None:
    root = tmp_path / "my-policies"
    shutil.copytree(ROOT / "policies", root, ignore=shutil.ignore_patterns("examples", "__pycache__", "*.py"))
    (root / "payments.rego").write_text(readme_rule())
    engine = compile_engine(load_bundle(root))
    engine.set_input_json(json.dumps({
        "stage": "action", "session": {"labels": {}, "counters": {}}, "new": [], "trajectory": [],
        "action": {"kind": "tool_call", "tool_name": "send_money", "arguments": {"recipient": "x", "amount": amount}},
    }))
    rules = {f["rule"] for f in engine.eval_rule("data.proctor.decision")["deny"]}
    assert ("payments.limit" in rules) is denied
