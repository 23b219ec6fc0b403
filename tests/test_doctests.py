"""Every example in the package's docstrings runs and prints what it shows, so the examples
cannot drift from the code (``python -m pytest --doctest-modules ctrldec`` runs the same)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import ctrldec

MODULES = sorted(m.name for m in pkgutil.walk_packages(ctrldec.__path__, "ctrldec.") if not m.name.endswith("__main__"))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (run it with -v for the diff)"
