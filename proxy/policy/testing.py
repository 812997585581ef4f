"""``proctor policy test``: run ``*_test.rego`` with the embedded engine and
report like ``opa test`` (failures and a PASS/FAIL summary; ``-v`` lists all)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from proxy.policy.bundle import PolicyError, load_bundle
from proxy.policy.embedded import _one_line, compile_engine

_PACKAGE = re.compile(r"^package\s+([A-Za-z_][\w.]*)", re.M)
_TEST_RULE = re.compile(r"^(test_\w+)\b", re.M)


@dataclass(frozen=True)
class TestResult:
    file: str
    name: str  # data.package.test_name
    outcome: str  # PASS, FAIL, ERROR
    ms: float
    error: str | None = None


def discover(source: str) -> list[str]:
    m = _PACKAGE.search(source)
    if m is None:
        return []
    names = dict.fromkeys(_TEST_RULE.findall(source))  # a test may have several bodies
    return [f"data.{m.group(1)}.{n}" for n in names]


def run_tests(root: str | Path, pattern: str | None = None) -> list[TestResult]:
    """Run the tests of a policy directory, or of one ``*_test.rego`` file in it
    (compiled with the rest of its directory, whose modules it tests)."""
    only: str | None = None
    if not Path(root).exists():
        raise PolicyError(f"{root} does not exist: name a policy directory or a *_test.rego file in one")
    if Path(root).is_file():
        file = Path(root).resolve()
        root = _bundle_root(file)
        only = str(file.relative_to(root))
    bundle = load_bundle(root)
    engine = compile_engine(bundle, with_tests=True)
    results = []
    for rel, source in sorted(bundle.tests.items()):
        if only is not None and rel != only:
            continue
        for name in discover(source):
            if pattern and not re.search(pattern, name):
                continue
            t0 = time.perf_counter()
            try:
                engine.set_input_json("{}")
                value = engine.eval_rule(name)
                outcome, error = ("PASS", None) if value is True else ("FAIL", None)
            except BaseException as e:  # noqa: BLE001 - regorus panics are BaseException
                if isinstance(e, (KeyboardInterrupt, SystemExit)):
                    raise
                outcome, error = "ERROR", _one_line(e)
            results.append(TestResult(str(Path(root) / rel), name, outcome, (time.perf_counter() - t0) * 1000, error))
    return results


def _bundle_root(file: Path, levels: int = 3) -> Path:
    """The policy directory a test file belongs to: the nearest of its directory
    and the two above it that holds a data.json (policies/ for
    policies/proctor/loops_test.rego), else its own directory."""
    for root in [file.parent, *file.parent.parents][:levels]:
        if (root / "data.json").is_file():
            return root
    return file.parent


def report(results: list[TestResult], out: TextIO, verbose: bool = False) -> int:
    """Print like ``opa test``; return the exit status (0 when all pass)."""
    by_file: dict[str, list[TestResult]] = {}
    for r in results:
        if verbose or r.outcome != "PASS":
            by_file.setdefault(r.file, []).append(r)
    for file, rs in by_file.items():
        print(f"{file}:", file=out)
        for r in rs:
            detail = f"\n  {r.error}" if r.error else ""
            print(f"{r.name}: {r.outcome} ({r.ms:.3f}ms){detail}", file=out)
        print(file=out)
    passed = sum(r.outcome == "PASS" for r in results)
    failed = sum(r.outcome == "FAIL" for r in results)
    errors = sum(r.outcome == "ERROR" for r in results)
    print("-" * 80, file=out)
    if not results:
        print("no tests found", file=out)
        return 1
    if passed == len(results):
        print(f"PASS: {passed}/{len(results)}", file=out)
        return 0
    print(f"PASS: {passed}/{len(results)}", file=out)
    if failed:
        print(f"FAIL: {failed}/{len(results)}", file=out)
    if errors:
        print(f"ERROR: {errors}/{len(results)}", file=out)
    return 2


__all__ = ["PolicyError", "TestResult", "discover", "report", "run_tests"]
