"""docs/bad-inputs.md and the catalogue tests list the same cases: each table row is one parametrised case of its
module (same ids, same order), ids are unique kebab-case, and the catalogue has the 40+ rows issue 7 asks for."""

from __future__ import annotations

import re
from pathlib import Path

import test_bad_inputs_package
import test_bad_inputs_task

DOC = Path(__file__).parents[1] / "docs" / "bad-inputs.md"
SECTIONS = {"## Packages, model files": test_bad_inputs_package, "## Task inputs": test_bad_inputs_task}


def _rows(heading: str) -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index(heading):].split("\n## ", 1)[0]
    return [line.split("|")[1].strip() for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("| id ")]


def test_each_table_lists_its_module_cases_in_order():
    for heading, module in SECTIONS.items():
        assert _rows(heading) == [c.id for c in module.CASES], heading


def test_ids_are_unique_kebab_case_and_enough():
    ids = [c.id for module in SECTIONS.values() for c in module.CASES]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", i) for i in ids)
    assert len(ids) >= 40
