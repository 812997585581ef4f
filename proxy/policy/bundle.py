"""A policy directory: its Rego modules, its data, and the revision that names
exactly that content.

Layout follows OPA bundles: ``*.rego`` anywhere (``*_test.rego`` are tests, not
served); ``data.json`` / ``data.yaml`` in a directory become the data document
at that directory's path (``policies/data.json`` is ``data``,
``policies/tools/data.json`` is ``data.tools``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxy.errors import ProctorError

DATA_FILES = ("data.json", "data.yaml", "data.yml")


class PolicyError(ProctorError):
    """A policy directory that cannot be served: the message names file:line:col."""

    code = "policy_error"


@dataclass(frozen=True)
class Bundle:
    root: Path
    modules: dict[str, str]  # path relative to root -> Rego source (tests excluded)
    tests: dict[str, str]  # *_test.rego
    data: dict[str, Any] = field(default_factory=dict)
    revision: str = ""


def bundled_library() -> Path:
    """The policy library shipped with Proctor (installed as the ``policies`` package)."""
    import policies

    return Path(policies.__file__).resolve().parent


def _load_data_file(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise PolicyError(f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise PolicyError(f"{where}: invalid YAML: {e}") from None


def _merge(into: dict[str, Any], path: tuple[str, ...], value: Any, source: Path) -> None:
    node = into
    for part in path:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise PolicyError(f"{source}: data at {'.'.join(path)} conflicts with a non-object value")
    if not isinstance(value, dict):
        raise PolicyError(f"{source}: a data file must hold an object at its top level")
    for key, v in value.items():
        if key in node and isinstance(node[key], dict) and isinstance(v, dict):
            _merge(node, (key,), v, source)
        else:
            node[key] = v


def load_bundle(root: str | Path) -> Bundle:
    root = Path(root)
    if not root.is_dir():
        raise PolicyError(f"policy directory {root} does not exist; pass --policies DIR")
    modules: dict[str, str] = {}
    tests: dict[str, str] = {}
    data: dict[str, Any] = {}
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        if path.suffix == ".rego":
            source = path.read_text(encoding="utf-8")
            (tests if path.name.endswith("_test.rego") else modules)[rel] = source
        elif path.name in DATA_FILES:
            _merge(data, path.relative_to(root).parent.parts, _load_data_file(path), path)
        else:
            continue
        digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    if not modules:
        raise PolicyError(f"policy directory {root} holds no .rego module")
    return Bundle(root=root, modules=modules, tests=tests, data=data, revision=digest.hexdigest()[:12])


def fingerprint(root: str | Path) -> tuple[tuple[str, int, int], ...]:
    """Cheap change detection for hot reload: names, sizes and mtimes."""
    root = Path(root)
    out = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and (path.suffix == ".rego" or path.name in DATA_FILES):
            st = path.stat()
            out.append((path.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns))
    return tuple(out)
