"""Every resource limit of ctrldec in one typed object (like llguidance's ``LLParserLimits``).

A limit is a number that trades exactness or coverage for bounded time or memory. Each field says
what it bounds, what going past it does, what the work under it costs, and why the value is what
it is. Code reads limits from a ``Limits`` instance, never from a module constant: the default one
(``DEFAULT_LIMITS``), or one a user passes (``JSONSchema(schema, limits=Limits(max_items=64))``).

>>> from ctrldec.limits import Limits
>>> strict = Limits(max_seconds=2.0)
>>> strict.max_seconds, strict.max_states, Limits().max_items
(2.0, 200000, 1024)

Compile work is metered as fuel, not interrupted by a signal: the loops that can grow without
bound (automaton products, the lexer automaton, SLR item sets, JSON Schema rule expansion, and
interegular's state exploration) call ``engine.bytedfa.check_budget``, which reads the deadline
and state bound that ``compile_budget`` puts in a context variable. That works in any thread.
Lark's own grammar analysis cannot be metered from inside, so its input is bounded
(``max_grammar_rules``) and the deadline is checked right after it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits", "DEFAULT_LIMITS"]


@dataclass(frozen=True)
class Limits:
    """Resource limits; the defaults are the values the coverage figures in README were measured with."""

    # -- the compile budget (per compile, JSONSchema) -----------------------------------------------
    max_seconds: float = 10.0
    """Wall-clock seconds one JSON Schema compile may take; past it, ``SchemaError`` names the budget.
    Why: JSONSchemaBench compiles take 24 ms p50, 1.3 s p99 (``ctrldec bench coverage --limit 200``);
    10 s leaves room for slower machines and still fails fast on an exponential pattern."""

    max_states: int = 200_000
    """Most states of any one automaton built while compiling (a regex DFA, a product, the lexer
    automaton, SLR item sets) and most grammar rules of a JSON Schema. Each DFA state costs 1 KB
    (``int32[256]``), so the bound keeps one automaton under ~200 MB."""

    max_memory: int = 2 << 30
    """Bytes the process's resident set may grow by during one compile (read from the OS every
    10 ms by the metered loops; other threads' allocations count too); past it, ``SchemaError`` or
    ``GrammarError`` names the budget. Why: the largest compiles of JSONSchemaBench stay under
    ~250 MB (``max_modulus`` below), while a 10 MB schema of 40,000 optional properties grew past
    24 GB before this bound (``ctrldec bench memory``); 2 GB stops such a compile on a small machine."""

    max_grammar_rules: int = 20_000
    """Most rules (alternatives) handed to Lark's LALR(1) analysis (``Grammar``), which cannot be
    interrupted: bounding its input bounds its time. Past it, ``GrammarError``. Cost, measured on
    this project's 2-core machine: 10,000 rules 2.0 s, 40,000 rules 9.3 s. Why: hand-written
    grammars have tens to hundreds of rules; 20,000 keeps the analysis to a few seconds."""

    # -- the JSON Schema compiler (change the compiled language: part of the cache key) -------------
    max_count: int = 64
    """Exact counting of object properties (min/maxProperties) and of ``contains`` matches up to
    here; past it, a relaxation (``lenient``) or ``SchemaError``. Cost: rules per count and member
    position (``maxProperties: 64`` compiles in 10 ms, ``maxContains: 64`` in 20 ms). Why: counts
    in real schemas are small; the bound stops a count of thousands from multiplying rules."""

    max_items: int = 1024
    """Exact counting of array items (minItems/maxItems) up to here: one rule per position, linear
    (``maxItems: 1024`` compiles in 0.11 s). Why: larger bounds are "no limit" markers in practice,
    and relaxing them (lenient) beats a grammar of tens of thousands of rules."""

    max_union_product: int = 64
    """Most branches an ``allOf`` of ``anyOf``/``oneOf`` lists (or a ``not`` of an object, or a set
    of property dependencies) is distributed into. Each branch is a copy of the object's rules:
    two unions of 8 objects (64 branches) compile in 0.17 s to 2,064 lexer states. Why: the
    product is exponential in the number of unions; 64 keeps it a fraction of a second."""

    max_any_order_required: int = 6
    """``property_order="any"`` tracks which required keys were seen: 2^r rule states per object.
    Objects with more required keys keep the schema's order (a warned restriction). Why: 2^6 = 64."""

    max_pattern_properties: int = 4
    """``patternProperties`` patterns whose overlaps are intersected (2^p key regions); with more,
    each pattern is a separate alternative (overlaps not intersected, a relaxation). Why: 2^4 = 16
    product automata."""

    max_ref_depth: int = 32
    """Nesting of ``allOf``/``$ref`` flattening; deeper is reported as a likely reference cycle
    (``SchemaError``). Why: real schemas nest a handful of levels; cycles through allOf never end."""

    max_disjoint_depth: int = 4
    """How deep the check that ``oneOf`` object branches are disjoint looks into nested properties
    before giving up (then the branches are read as ``anyOf``: a relaxation). Each level flattens
    every property pair again. Why: distinguishing tags sit at the top one or two levels."""

    max_length_bound: int = 256
    """String length bounds tabulated up to here when a table is needed (differences of strings,
    ``propertyNames``); one automaton level (~24 states) per character. Longer bounds are counted
    lazily where possible, else relaxed. Cost at the bound: ``propertyNames: {maxLength: 256}``
    compiles in 0.33 s to 4,943 lexer states (~22 MB). Why: a few times that stays sub-second."""

    max_modulus: int = 50_000
    """States of a ``multipleOf`` automaton (the scaled divisor times fraction digits + 2); past it,
    a relaxation. Cost at the bound: ``{"type": "integer", "multipleOf": 24999}`` compiles in 5.9 s
    to 50,023 lexer states (~220 MB by ``memory_size_bytes``). Why: the largest that stays inside
    the default 10 s budget on this project's 2-core machine."""

    max_counted_min: int = 1024
    """Largest ``minLength`` counted lazily together with a pattern or format: the compiler keeps a
    table of completion lengths per character up to the minimum. Past it, refused (strict) or
    relaxed. Why: 1,024 rows times the pattern's states stays a few MB."""

    # -- the engine (per compiled grammar) --------------------------------------------------------
    max_stack_nodes: int = 300_000
    """Interned parser stacks per compiled grammar before a fresh store is started (matchers keep
    the store they started with). A stack with the cache entries keyed by it costs ~180 bytes
    (``engine.grammar.ENTRY_BYTES``), so a store stays under ~55 MB. Why: the JSONSchemaBench
    replay of ``docs/engine.md`` creates 117k stacks; a new store costs its caches' warm-up."""

    max_pooled_masks: int = 50_000
    """Distinct token masks kept per compiled grammar (shared by equal masks); past it the pool is
    emptied. Each costs vocab/4 bytes, array and key (12 KB for 49,152 tokens), so a full pool is
    ~600 MB. Why: an upper bound against pathological growth, not a working size."""

    max_shared_classification_bytes: int = 256 * 2**20
    """Token classifications kept per tokenizer for every grammar compiled for it (a lexer state
    built from the same terminal automata is classified once per process); least recently used
    ones go past it. A classification holds a few bitmasks and the token ids that end a lexeme
    (tens of KB for 49,152 tokens); the table that interns their token arrays by content holds
    up to a quarter of this more, and starts afresh past it. Why: a server that compiles
    thousands of schemas keeps the common ones (JSON strings, numbers, property names) without
    growing without bound."""

    max_forced_bytes: int = 512
    """Longest run of forced bytes computed at once for fast-forwarding (``forced_tokens``); the
    rest is found on the next call. Why: a long constant (an enum of long strings) still costs one
    bounded walk per call."""

    max_configs: int = 256
    """Simultaneous readings (parser configurations) of an ambiguous grammar; past it,
    ``DeadEndError`` says the grammar is too ambiguous there. Each byte costs work per reading.
    Why: hundreds of live readings means an ambiguity that grows exponentially with the text."""

    max_completion_states: int = 20_000
    """States searched breadth-first for the shortest completion (``ByteAutomaton.completion``)
    before giving up (None). Why: a witness is a test oracle (``bench masks``); a search that
    needs more states than this is rare and may be skipped."""

    # -- the logits processor (per processor instance) -----------------------------------------------
    max_catch_up: int = 32
    """How many tokens a row may be ahead of its longest cached prefix (its matcher is then forked
    and advanced over the difference; further back, the row is taken for a new prompt). Cost: one
    dict lookup per step back. Why: assisted generation checks draft positions in order (each finds
    its parent one token back); 32 covers callers that skip ahead over a whole draft."""

    processor_cache_entries: int = 1024
    """Prefixes (and their matchers) a ``GrammarLogitsProcessor`` remembers, least recently used
    dropped first. Every call touches each row's latest prefix, so rows stay cached while fewer than
    entries / (1 + draft length) rows are being generated by all the calls sharing the processor
    (1,024 plain rows, 31 rows with 32-token drafts). Each entry holds its prefix: 8 bytes per token.
    Why: 1,024 prefixes of 2,000 tokens is 16 MB."""

    # -- process-wide caches (the memo sizes are read from DEFAULT_LIMITS at import) ----------------
    cache_limit_bytes: int = 2 << 30
    """Estimated bytes (``memory_size_bytes``) the grammar cache may hold before it drops least
    recently used entries (checked as entries are added). Why: masks and lexer states grow as
    grammars are used; 2 GiB is above a benchmark run's working set (see ``docs/engine.md``) and
    stops a long-lived server from growing without end."""

    max_cached_tables: int = 256
    """Tokenizer-independent grammar tables kept by the grammar cache (LRU). Why: compiling a
    grammar again costs milliseconds; 256 covers a benchmark split."""

    max_cached_grammars: int = 64
    """Grammars bound to a tokenizer (with their mask caches) kept by the grammar cache (LRU).
    Why: each can hold megabytes of masks; 64 live constraints is plenty for one process."""

    max_cached_regexes: int = 4096
    """Terminal regexes whose byte DFAs are memoised per process (shared by every grammar).
    Why: a JSON Schema grammar has tens of terminals; 4,096 covers a benchmark run."""

    max_cached_string_bodies: int = 1024
    """JSON Schema ``pattern``/``format`` string-body automata memoised per process. Why: as above."""

    max_cached_string_automata: int = 256
    """Whole JSON Schema string automata (quotes, patterns, formats and length together)
    memoised per process. Why: the same object in every grammar that asks for the same string
    lets grammars share the token classifications of its states (a format's automaton is too
    large to be keyed by content); 256 covers a benchmark run's distinct strings."""

    max_cached_length_automata: int = 512
    """Tabulated string-length automata (one per (minLength, maxLength)) memoised per process.
    Why: at most 256 levels each; real schemas use a few dozen distinct bounds."""

    other_keys_cache_bytes: int = 64 << 20
    """Tables of objects' other-keys automata (any key but the declared ones) memoised per
    process by the declared names, so that schemas sharing definitions build each once. Why:
    about 60 KB each in Kubernetes schemas (100 objects a schema); 64 MB keeps about ten such
    schemas' worth."""

    max_cached_automaton_keys: int = 1 << 16
    """Keys of small terminal automata (a lexer state's share of a token-classification key, see
    ``engine/lexer.py``) kept per process by the automaton's content, so that the punctuation,
    keywords and names every grammar builds afresh are keyed once. Why: about 200 bytes each
    (13 MB in all); a 300-schema benchmark run asks about 17,000."""

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value is None or value <= 0:
                raise ValueError(f"Limits.{name} must be positive, got {value!r}")


DEFAULT_LIMITS = Limits()
"""The limits used where none is given."""
