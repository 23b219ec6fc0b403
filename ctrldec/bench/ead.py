"""``ctrldec bench ead``: entropy-adaptive decoding against the full model alone.

On free-text prompts (the quality tasks: GSM8K, shuffled objects, last letters) and on
(prompt, schema) pairs from JSONSchemaBench, greedy, the same ``max_new_tokens``, fast-forward on
and prompt lookup off everywhere (so that the rows differ only in who writes): the full model
alone, then ``EntropySwitch`` at each threshold of the sweep. Per row and prompt set:

* ``full share``: the share of sampled output tokens (not forced by the constraint) the full model
  wrote (``GenerationResult.models``);
* ``tok/s``: output tokens over wall time (prompt prefill included, for all alike), and the
  speed-up over the full model alone;
* ``loglik``: the mean log-likelihood per output token under the full model alone (one forward
  pass over prompt and output, the raw distribution), and its gap to the full model's own outputs;
* ``agree``: the share of positions where the output's token is the full model's greedy token
  (over the longer of the two outputs);
* ``valid``: schema rows only, outputs that the schema validates.
"""

from __future__ import annotations

import json
import time
from typing import Any

import torch

from .e2e import _constraint, free_prompts
from .generation import PROMPT, pick_schemas, validation_errors

__all__ = ["run", "format_report", "plot", "THRESHOLDS"]

THRESHOLDS = (0.0, 0.75, 1.0, 1.25, 1.5, 2.0)


def run(model: Any, tokenizer: Any, *, free_text: str | None, jsonschemabench: str | None, thresholds=THRESHOLDS,
        layers: int | None = None, window: int = 5, min_dwell: int = 4, limit: int = 20, splits=("Glaiveai2K", "Github_easy"),
        max_new_tokens: int = 64, seed: int = 0, progress: bool = False) -> dict[str, Any]:
    from ..ead import EntropySwitch
    from ..generate import Decoder

    decoder = Decoder(model, tokenizer)
    switches = {t: EntropySwitch(layers=layers, window=window, threshold=t, min_dwell=min_dwell) for t in thresholds}
    sets = {}
    if free_text:
        sets["free"] = [(decoder.encode_prompt(p), None, None) for p in free_prompts(free_text, limit)]
    if jsonschemabench:
        pairs, skipped = [], []
        for row in pick_schemas(jsonschemabench, list(splits), limit, seed):
            schema = json.loads(row["schema"])
            constraint = _constraint(schema, decoder, row["id"], skipped)
            if constraint is not None:
                messages = [{"role": "system", "content": PROMPT}, {"role": "user", "content": json.dumps(schema)}]
                pairs.append((decoder.encode_prompt(messages), constraint, schema))
        sets["schemas"] = pairs
    if not sets:
        raise ValueError("give --free-text DIR and/or --jsonschemabench DIR: the prompts to run on")
    report: dict[str, Any] = {"max_new_tokens": max_new_tokens, "window": window, "min_dwell": min_dwell,
                              "layers": next(iter(switches.values())).runner(decoder.runner, tokenizer).runners["small"].model.config.num_hidden_layers,
                              "sets": {}}
    for name, prompts in sets.items():
        rows: dict[str, dict[str, float]] = {}
        for i, (prompt, constraint, schema) in enumerate(prompts):
            full = _one(decoder, prompt, constraint, max_new_tokens, None)
            _add(rows.setdefault("full", _totals()), full, full, schema, model, prompt)
            for t, switch in switches.items():
                out = _one(decoder, prompt, constraint, max_new_tokens, switch)
                _add(rows.setdefault(f"{t:g}", _totals()), out, full, schema, model, prompt)
            if progress:
                print(f"  {name} {i + 1}/{len(prompts)}: " + ", ".join(f"{k} {v['tokens'] / v['seconds']:.1f} tok/s" for k, v in rows.items()), flush=True)
        report["sets"][name] = {"prompts": len(prompts), "rows": _finish(rows)}
    return report


def _one(decoder: Any, prompt: list[int], constraint: Any, max_new_tokens: int, switch: Any) -> dict[str, Any]:
    started = time.perf_counter()
    result = decoder.generate(prompt, constraint=constraint, greedy=True, max_new_tokens=max_new_tokens, lookahead=0, ead=switch)
    return {"result": result, "seconds": time.perf_counter() - started}


def _totals() -> dict[str, float]:
    return dict.fromkeys(("tokens", "seconds", "sampled", "full_tokens", "loglik", "agree", "positions", "valid", "outputs"), 0.0)


def _add(row: dict[str, float], out: dict[str, Any], full: dict[str, Any], schema: Any, model: Any, prompt: list[int]) -> None:
    ids, ref = out["result"].token_ids, full["result"].token_ids
    result = out["result"]
    sampled = [m for m, kind in zip(result.models or ["full"] * len(ids), result.kinds) if kind == "sampled"]
    row["outputs"] += 1
    row["tokens"] += len(ids)
    row["seconds"] += out["seconds"]
    row["sampled"] += len(sampled)
    row["full_tokens"] += sampled.count("full")
    row["loglik"] += _loglik(model, prompt, ids)
    row["agree"] += sum(a == b for a, b in zip(ids, ref))
    row["positions"] += max(len(ids), len(ref))
    if schema is not None:
        row["valid"] += out["result"].finish_reason == "eos" and not validation_errors(schema, out["result"].text)


def _loglik(model: Any, prompt: list[int], ids: list[int]) -> float:
    """Sum of the output tokens' log-probabilities under ``model`` (raw distribution)."""
    if not ids:
        return 0.0
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + ids]), logits_to_keep=len(ids) + 1).logits[0, :-1].float()
    logp = torch.log_softmax(logits, dim=-1)
    return float(logp[torch.arange(len(ids)), torch.tensor(ids)].sum())


def _finish(rows: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    base = rows["full"]
    base_rate = base["tokens"] / base["seconds"]
    base_ll = base["loglik"] / max(base["tokens"], 1)
    for row in rows.values():
        row["tokens_per_s"] = row["tokens"] / row["seconds"]
        row["speedup"] = row["tokens_per_s"] / base_rate
        row["full_share"] = row["full_tokens"] / max(row["sampled"], 1)
        row["loglik_per_token"] = row["loglik"] / max(row["tokens"], 1)
        row["loglik_gap"] = row["loglik_per_token"] - base_ll
        row["agreement"] = row["agree"] / max(row["positions"], 1)
    return rows


def format_report(report: dict[str, Any]) -> str:
    lines = [f"EAD: small = the first {report['layers']} layers, window {report['window']}, min dwell {report['min_dwell']}, "
             f"greedy, max_new_tokens {report['max_new_tokens']}"]
    for name, part in report["sets"].items():
        lines.append(f"\n{name} ({part['prompts']} prompts)")
        lines.append(f"{'threshold':>10}{'full share':>11}{'tok/s':>8}{'speed-up':>9}{'loglik/tok':>11}{'gap':>8}{'agree':>7}"
                     + (f"{'valid':>7}" if name == "schemas" else ""))
        for key, r in part["rows"].items():
            lines.append(f"{'full alone' if key == 'full' else key:>10}{r['full_share']:>11.0%}{r['tokens_per_s']:>8.1f}"
                         f"{r['speedup']:>8.2f}x{r['loglik_per_token']:>11.3f}{r['loglik_gap']:>8.3f}{r['agreement']:>7.0%}"
                         + (f"{int(r['valid']):>4}/{int(r['outputs'])}" if name == "schemas" else ""))
        fast = [(float(k), r) for k, r in part["rows"].items() if k != "full" and r["speedup"] >= 1.3]
        if fast:
            t, r = min(fast, key=lambda p: p[0])
            lines.append(f"lowest threshold with >= 1.3x: {t:g} ({r['speedup']:.2f}x, log-likelihood gap {r['loglik_gap']:.3f} per token)")
        else:
            lines.append("no threshold of the sweep reaches 1.3x")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: str) -> None:
    """Speed-up and log-likelihood gap against the threshold, per prompt set."""
    from .plots import figure

    fig = figure(9, 3.6)
    speed, gap = fig.subplots(1, 2)
    for name, part in report["sets"].items():
        keys = [k for k in part["rows"] if k != "full"]
        xs = [float(k) for k in keys]
        speed.plot(xs, [part["rows"][k]["speedup"] for k in keys], marker="o", label=name)
        gap.plot(xs, [part["rows"][k]["loglik_gap"] for k in keys], marker="o", label=name)
    speed.axhline(1.0, color="grey", linewidth=0.8)
    speed.axhline(1.3, color="grey", linestyle="--", linewidth=0.8)
    speed.set(xlabel="threshold (nats)", ylabel="tokens/s over the full model alone", title="speed")
    gap.axhline(0.0, color="grey", linewidth=0.8)
    gap.set(xlabel="threshold (nats)", ylabel="log-likelihood per token, minus full alone", title="quality")
    speed.legend()
    fig.suptitle(f"EAD, small model = first {report['layers']} layers")
    fig.savefig(path, dpi=110)
