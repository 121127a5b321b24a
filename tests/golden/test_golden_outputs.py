"""`roadprn extract` gives the same outputs, decoded pixel for pixel and geometry for geometry,
as the committed digests: a refactoring must not change what users get."""

from __future__ import annotations

import json

import pytest

from .digests import GOLDEN_FILE, SCENES, run_extract


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(SCENES))
def test_extract_outputs_are_unchanged(case, tmp_path, realdata):
    expected = json.loads(GOLDEN_FILE.read_text())[case]
    actual = run_extract(SCENES[case], tmp_path / "out")
    assert sorted(actual) == sorted(expected)
    for name in expected:
        assert actual[name] == expected[name], f"{case}: {name} differs from the committed digest"
