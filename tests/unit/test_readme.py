"""The README's table of faults, bad input and attacks names tests that exist, loses no event, and lists
every bad input the suite tries."""

import ast
import re
from pathlib import Path

from test_bad_input import CASES

ROOT = Path(__file__).resolve().parents[2]


def table_rows():
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Faults, bad input and attacks") :]
    section = section[: section.index("\n## ", 1)]
    return [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("| what")]  # fmt: skip


def test_every_row_names_an_existing_test_and_loses_nothing():
    rows = table_rows()
    assert len(rows) >= 25
    for what, kind, _, lost, test in rows:
        assert kind in ("fault", "bad input", "attack") and lost == "0", what
        path, _, name = test.strip("`").partition("::")
        name, _, case = name.partition("[")
        tree = ast.parse((ROOT / path).read_text())
        functions = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
        assert name in functions, f"{test} does not exist"
        if case:
            assert case.rstrip("]") in {c[0] for c in CASES}, f"{test}: no such case"


def test_every_bad_input_the_suite_tries_is_in_the_table():
    listed = {m.group(1) for row in table_rows() if (m := re.search(r"\[(.+)\]`$", row[4]))}
    assert listed == {c[0] for c in CASES}
