"""``ctrldec bench search``: what each decoding strategy returns, and how different its outputs are.

Two sets, each through ctrldec's loop with the same ``max_new_tokens``:

* **schemas**: (prompt, schema) pairs from JSONSchemaBench (its system prompt, the schema as the
  user message), generated under the schema (ctrldec's defaults: fast-forward, budget-aware);
* **free text**: 20 chat prompts, unconstrained.

Strategies: ``greedy`` (the loop's defaults, prompt lookup included), ``greedy-plain`` (no prompt
lookup: the same token-at-a-time loop the searches run), ``contrastive`` (alpha 0.6, k 4),
``beam`` (B = 6), ``beam-tf`` (B = 6 without recombination: transformers' beam search, which
keeps tokenizations of one text as separate hypotheses), ``diverse-beam`` (B = 6, G = 3,
diversity 0.5) and ``sample`` (B = 6 samples at temperature 1, one batch, as the diversity
reference).

Reported per strategy and set, over the returned outputs (B for the beam searches and sampling,
one otherwise): outputs, *distinct* (different texts; under a schema different valid JSON
values, keys sorted), distinct-2 (distinct token bigrams over all bigrams of the set),
self-BLEU (BLEU-4 of each output against the others, smoothed; lower is more diverse), valid
(jsonschema, FormatChecker on), mean model log-likelihood per token (the unconstrained model's),
rep-4 (share of repeated token 4-grams within the first output: degeneration) and tokens/s (the
first output's tokens over the call's wall time, prefill included).
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from .generation import PROMPT, pick_schemas, validation_errors
from .mirostat import PROMPTS as STORY_PROMPTS

__all__ = ["FREE_TEXT", "STRATEGIES", "run", "format_report", "self_bleu", "distinct_n", "repeated_ngrams"]

FREE_TEXT = STORY_PROMPTS + [
    "Give three tips for learning a new language as an adult.",
    "What are the main differences between a crocodile and an alligator?",
    "Write a product description for a reusable water bottle.",
    "Summarize the plot of a heist movie you would like to see.",
    "Explain why the sky is blue.",
    "Write a poem about the first snow of winter.",
    "How do I make a simple tomato sauce?",
    "Describe the life of a honeybee in a hive.",
    "What should I pack for a three-day hiking trip?",
    "Write a short speech for a friend's wedding.",
]

STRATEGIES = ["greedy", "greedy-plain", "contrastive", "beam", "beam-tf", "diverse-beam", "sample"]
BEAMS = 6


def _options(name: str) -> dict[str, Any]:
    from ..search import BeamSearch, ContrastiveSearch, DiverseBeamSearch

    return {
        "greedy": {"greedy": True},
        "greedy-plain": {"greedy": True, "lookahead": 0},
        "contrastive": {"search": ContrastiveSearch(0.6, 4)},
        "beam": {"search": BeamSearch(BEAMS)},
        "beam-tf": {"search": BeamSearch(BEAMS, recombine=False)},
        "diverse-beam": {"search": DiverseBeamSearch(BEAMS, 3, 0.5)},
    }[name]


def run(model: Any, tokenizer: Any, folder: str | None, *, splits: list[str], limit: int = 20, prompts: int = 20,
        seed: int = 0, max_new_tokens: int = 128, strategies: Sequence[str] = STRATEGIES,
        progress: bool = False) -> dict[str, Any]:
    from ..generate import Decoder

    unknown = sorted(set(strategies) - set(STRATEGIES))
    if unknown:
        raise ValueError(f"unknown strateg{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; the bench has: {', '.join(STRATEGIES)}")
    if not 0 <= prompts <= len(FREE_TEXT):
        raise ValueError(f"prompts must be between 0 and {len(FREE_TEXT)}, got {prompts}")
    decoder = Decoder(model, tokenizer)
    jobs: list[tuple[str, str, Any, Any, list[int]]] = []  # (set, id, constraint, schema, prompt ids)
    if folder:
        from .e2e import _constraint

        skipped: list[dict] = []
        for row in pick_schemas(folder, splits, limit, seed):
            schema = json.loads(row["schema"])
            constraint = _constraint(schema, decoder, row["id"], skipped)
            if constraint is not None:
                ids = decoder.encode_prompt([{"role": "system", "content": PROMPT}, {"role": "user", "content": json.dumps(schema)}])
                jobs.append(("schemas", row["id"], constraint, schema, ids))
    for i, text in enumerate(FREE_TEXT[:prompts]):
        jobs.append(("free text", f"p{i}", None, None, decoder.encode_prompt(text)))
    rows: dict[tuple[str, str], list[dict]] = {}
    for n, (kind, name, constraint, schema, ids) in enumerate(jobs):
        for strategy in strategies:
            rows.setdefault((kind, strategy), []).append(
                _one(decoder, strategy, ids, constraint, schema, max_new_tokens, seed + n))
        if progress:
            print(f"  {n + 1}/{len(jobs)} {kind} {name}: " + ", ".join(
                f"{s} {rows[(kind, s)][-1]['distinct']}/{rows[(kind, s)][-1]['outputs']}" for s in strategies), flush=True)
    table = [{"set": kind, "strategy": strategy, **_summary(items)} for (kind, strategy), items in rows.items()]
    return {"max_new_tokens": max_new_tokens, "beams": BEAMS, "rows": table,
            "schemas": sum(j[0] == "schemas" for j in jobs), "prompts": sum(j[0] != "schemas" for j in jobs)}


def _one(decoder: Any, strategy: str, ids: list[int], constraint: Any, schema: Any, max_new_tokens: int,
         seed: int) -> dict[str, Any]:
    start = time.perf_counter()
    if strategy == "sample":
        outs = decoder.generate_batch([ids] * BEAMS, constraint=constraint, max_new_tokens=max_new_tokens, seed=seed)
    else:
        best = decoder.generate(ids, constraint=constraint, max_new_tokens=max_new_tokens, **_options(strategy))
        outs = best.search.hypotheses if best.search is not None else [best]
    seconds = time.perf_counter() - start
    texts = [o.text for o in outs]
    valid = [not validation_errors(schema, t) for t in texts] if schema is not None else [not o.truncated for o in outs]
    if schema is not None:
        distinct = len({json.dumps(json.loads(t), sort_keys=True) for t, ok in zip(texts, valid) if ok})
    else:
        distinct = len(set(texts))
    tokens = [o.token_ids for o in outs]
    logprobs = [lp for o in outs for lp in o.logprobs if math.isfinite(lp)]
    return {"outputs": len(outs), "distinct": distinct, "distinct_2": distinct_n(tokens, 2), "self_bleu": self_bleu(tokens),
            "valid": sum(valid), "loglik": sum(logprobs) / max(len(logprobs), 1), "rep_4": repeated_ngrams(tokens[0], 4),
            "tokens": len(tokens[0]), "seconds": seconds}


def _summary(items: list[dict]) -> dict[str, float]:
    n = len(items)
    bleu = [i["self_bleu"] for i in items if i["self_bleu"] is not None]
    tokens = sum(i["tokens"] for i in items)
    seconds = sum(i["seconds"] for i in items)
    return {"n": n, "outputs": sum(i["outputs"] for i in items) / n, "distinct": sum(i["distinct"] for i in items) / n,
            "distinct_2": sum(i["distinct_2"] for i in items) / n, "self_bleu": sum(bleu) / len(bleu) if bleu else None,
            "valid": sum(i["valid"] for i in items) / sum(i["outputs"] for i in items),
            "loglik": sum(i["loglik"] for i in items) / n, "rep_4": sum(i["rep_4"] for i in items) / n,
            "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds if seconds else 0.0}


def distinct_n(outputs: Sequence[Sequence[int]], n: int) -> float:
    """Distinct n-grams over all n-grams of the outputs together (1.0: no n-gram repeats).

    >>> distinct_n([[1, 2, 3], [1, 2, 4]], 2)
    0.75
    """
    grams = [tuple(o[i:i + n]) for o in outputs for i in range(len(o) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repeated_ngrams(tokens: Sequence[int], n: int) -> float:
    """The share of ``tokens``' n-grams that occurred earlier in it (0: none repeats).

    >>> repeated_ngrams([1, 2, 1, 2, 1, 2], 2)
    0.6
    """
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def _bleu(hypothesis: Sequence[int], references: Sequence[Sequence[int]], order: int = 4) -> float:
    """Sentence BLEU-``order`` with add-one smoothing of the higher orders (Lin and Och, 2004)."""
    if not hypothesis:
        return 0.0
    log_precision = 0.0
    for n in range(1, order + 1):
        grams = Counter(tuple(hypothesis[i:i + n]) for i in range(len(hypothesis) - n + 1))
        best: Counter = Counter()
        for ref in references:
            best |= Counter(tuple(ref[i:i + n]) for i in range(len(ref) - n + 1))
        hits = sum(min(c, best[g]) for g, c in grams.items())
        total = sum(grams.values())
        smooth = 1 if n > 1 else 0
        if hits + smooth == 0 or total + smooth == 0:
            return 0.0
        log_precision += math.log((hits + smooth) / (total + smooth)) / order
    closest = min((abs(len(r) - len(hypothesis)), len(r)) for r in references)[1]
    brevity = min(0.0, 1 - closest / len(hypothesis))
    return math.exp(brevity + log_precision)


def self_bleu(outputs: Sequence[Sequence[int]]) -> float | None:
    """Mean BLEU-4 of each output against all the others (None for fewer than two).

    >>> self_bleu([[1, 2, 3, 4, 5], [1, 2, 3, 4, 5]])
    1.0
    """
    if len(outputs) < 2:
        return None
    return sum(_bleu(o, outputs[:i] + outputs[i + 1:]) for i, o in enumerate(outputs)) / len(outputs)


def format_report(report: dict[str, Any]) -> str:
    lines = [f"{report['schemas']} schemas and {report['prompts']} free-text prompts, {report['max_new_tokens']} new tokens, "
             f"B = {report['beams']}",
             f"{'set':10}{'strategy':14}{'outputs':>8}{'distinct':>9}{'dist-2':>8}{'s-BLEU':>8}{'valid':>7}{'loglik':>8}"
             f"{'rep-4':>7}{'tok/s':>7}"]
    for r in report["rows"]:
        bleu = "-" if r["self_bleu"] is None else f"{r['self_bleu']:.3f}"
        lines.append(f"{r['set']:10}{r['strategy']:14}{r['outputs']:>8.1f}{r['distinct']:>9.2f}{r['distinct_2']:>8.3f}{bleu:>8}"
                     f"{r['valid']:>7.0%}{r['loglik']:>8.3f}{r['rep_4']:>7.3f}{r['tokens_per_s']:>7.1f}")
    lines.append("(distinct: different texts, or different valid JSON values under a schema; valid: jsonschema for schemas, "
                 "complete for free text; tok/s: the first output's tokens over the call's time)")
    return "\n".join(lines)
