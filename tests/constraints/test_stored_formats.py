"""The format automata shipped in ``formats.npz`` are the ones their regexes build today.

A format's automaton is read from the packaged file instead of built (the URI and IRI grammars
take up to a second through interegular). The file must be current: when a regex in
``FORMATS`` or the way a regex becomes a string body changes, these tests fail until
``store_formats()`` writes it again.
"""

from __future__ import annotations

import pytest

from ctrldec.constraints.jsonschema import strings
from ctrldec.engine.bytedfa import product


@pytest.mark.parametrize("name", sorted(strings.FORMATS))
def test_a_stored_format_is_the_automaton_its_regex_builds(name: str) -> None:
    stored = strings._stored_format(name)
    assert stored is not None, f"formats.npz has no current automaton for {name!r}: run store_formats()"
    built = strings._pattern_body(f"(?:{strings.FORMATS[name]})")
    assert stored.trans.dtype == built.trans.dtype and stored.accepting.dtype == built.accepting.dtype
    # interegular numbers states by string hashes, which differ per process: compare languages
    assert product(stored, built, "diff").empty and product(built, stored, "diff").empty


def test_an_edited_regex_is_built_not_read_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(strings.FORMATS, "date", "[0-9]{4}")
    strings._format_body.cache_clear()
    strings._string_dfa.cache_clear()  # whole string automata are memoised too
    try:
        assert strings._stored_format("date") is None
        assert strings.string_dfa(fmt="date").matches(b'"2024"')
        assert not strings.string_dfa(fmt="date").matches(b'"2024-02-01"')
    finally:
        strings._format_body.cache_clear()
        strings._string_dfa.cache_clear()
    strings._string_dfa.cache_clear()  # whole string automata are memoised too


def test_without_the_file_formats_are_built(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(strings, "STORED_FORMATS", tmp_path / "missing.npz")
    strings._format_body.cache_clear()
    strings._string_dfa.cache_clear()  # whole string automata are memoised too
    try:
        assert strings._stored_format("uuid") is None
        assert strings.string_dfa(fmt="uuid").matches(b'"123e4567-e89b-12d3-a456-426614174000"')
    finally:
        strings._format_body.cache_clear()
        strings._string_dfa.cache_clear()
    strings._string_dfa.cache_clear()  # whole string automata are memoised too


def test_store_formats_round_trips(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(strings, "FORMATS", {"uuid": strings.FORMATS["uuid"], "ipv4": strings.FORMATS["ipv4"]})
    path = tmp_path / "formats.npz"
    strings.store_formats(path)
    monkeypatch.setattr(strings, "STORED_FORMATS", path)
    for name in ("uuid", "ipv4"):
        stored = strings._stored_format(name)
        assert stored is not None and stored.matches(b"127.0.0.1") == (name == "ipv4")
