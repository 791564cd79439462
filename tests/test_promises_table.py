"""docs/promises.md names a test for every promise: each must exist, so the table cannot drift from the suite."""
from __future__ import annotations

import ast
import re

from conftest import ROOT

TABLE = ROOT / "docs" / "promises.md"


def named_tests() -> set[tuple[str, str]]:
    return set(re.findall(r"`(tests/[\w/]+\.py)::(test_\w+)`", TABLE.read_text()))


def test_every_test_the_promises_table_names_exists():
    named = named_tests()
    assert len(named) >= 25, named
    missing = []
    for file, name in sorted(named):
        path = ROOT / file
        defined = {n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef)} \
            if path.exists() else set()
        if name not in defined:
            missing.append(f"{file}::{name}")
    assert not missing, missing


def test_every_fault_test_is_in_the_table():
    named = {name for _, name in named_tests()}
    for file in ("test_run_folder.py", "test_disk_faults.py", "test_integrity.py"):
        tree = ast.parse((ROOT / "tests" / file).read_text())
        tests = {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}
        assert tests <= named, f"{file}: {sorted(tests - named)} hold no row of docs/promises.md"
