"""``proctor policy init`` and ``proctor policy test`` as a user runs them."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.cli import main

LIBRARY = Path(__file__).resolve().parents[2] / "policies"


def test_init_copies_the_library_ready_to_extend_test_and_serve(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "my-policies"
    assert main(["policy", "init", str(target)]) == 0
    assert (target / "data.json").is_file() and (target / "proctor" / "decision.rego").is_file()
    assert not list(target.rglob("__init__.py"))
    (target / "payments.rego").write_text(
        'package proctor\nimport rego.v1\ndeny contains {"rule": "payments.any", "message": "no"} if {\n'
        '\tinput.action.tool_name == "wire_offshore"\n}\n')
    (target / "payments_test.rego").write_text(
        'package proctor_test.payments\nimport rego.v1\ntest_blocks_money if {\n'
        '\td := data.proctor.decision with input as {"stage": "action", "session": {"labels": {}, "counters": {}},'
        ' "new": [], "action": {"kind": "tool_call", "tool_name": "wire_offshore", "arguments": {}}}\n'
        '\t"payments.any" in {f.rule | some f in d.deny}\n}\n')
    capsys.readouterr()
    assert main(["policy", "test", str(target)]) == 0
    assert "PASS" in capsys.readouterr().out
    # one test file: compiled with its directory, only its tests run
    assert main(["policy", "test", str(target / "payments_test.rego")]) == 0
    assert capsys.readouterr().out.strip().endswith("PASS: 1/1")
    # an existing, non-empty directory is never overwritten
    assert main(["policy", "init", str(target)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_one_library_test_file_runs_with_the_librarys_data(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "test", str(LIBRARY / "proctor" / "coding_test.rego")]) == 0
    out = capsys.readouterr().out
    total = sum(1 for line in (LIBRARY / "proctor" / "coding_test.rego").read_text().splitlines() if line.startswith("test_"))
    assert out.strip().endswith(f"PASS: {total}/{total}")
