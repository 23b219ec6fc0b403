"""``ctrldec bench fidelity``: how far each sampler's output distribution is from the exact target.

The target of constrained generation is P*(w) = P(w) / P(L) over the token sequences w of the
constraint's language L (P: the model at temperature 1, w including its final EOS). On
constraints whose L is small enough to enumerate (every tokenization counts), P* is computed
exactly, and so is the distribution of token-by-token masking, Q_mask(w) = the product over
steps of p(x | prefix) / Z(prefix). The samplers are run through ctrldec's own loop against a
``TabledModel`` (``bench/tabled.py``: the model's distributions at every node of L's token
trie, looked up), which makes 10,000 samples per method a matter of seconds to minutes.

Methods: masking (``ctrldec``'s default sampler; exact, and sampled as a check of the
machinery), AWRS alone (same distribution as masking), SMC with N particles (AWRS-weighted;
each run's weighted particle set, complete particles only, estimates its output distribution),
with AWRS's estimated or the exact step weights, and, as a reference for SMC, importance
sampling with N draws from masking's exact distribution and exact weights (``sample_is``: no
decoding, no resampling; where SMC-N sits on IS-N, it is importance sampling from masking's
proposal, whatever its weights).
Every method runs with fast-forward off: forced text is committed in its canonical tokenization,
a different (smaller) language; see docs/fidelity.md. Reported per method: KL(Q || P*) (exact for
masking; the plug-in estimate from the samples otherwise, with a bootstrap standard error over
runs), total variation, E_Q[log P(w)] beside E_P*[log P(w)], and the floor: the same plug-in KL
for as many i.i.d. draws from P* itself (its finite-sample bias). Per N, SMC's estimate of
log P(L) (mean over runs of the log, and the log of the mean) beside the exact value.

ASAp (``search/asap.py``) learns across samples, so it gets a curve instead of a row: after n = 10,
100, 1,000, 10,000 samples drawn through the loop (``asap_samples``), its *exact* sampling
distribution is computed from the trie (``asap_distribution``: the product over each output's
tokens of p(x | u)·EFG~(u x) renormalised over the tokens allowed at u, EFG~ = 1 for what the trie
has not seen, as the sampler does), with KL to P*, TV and E_Q[log P(w)]. Two schedules at the
same n: one sample per round (B = 1: the trie updated after each) and ``asap_batch`` samples per
round (one batched pass per step, the trie updated after each round), which shows what the
one-round lag costs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import CtrldecError
from .tabled import Exact, TabledModel, build_table, enumerate_language, exact_distributions

__all__ = ["Case", "CASES", "Draws", "pick_cases", "run", "format_report", "figure", "plot", "asap_distribution",
           "asap_curve", "METHODS", "ASAP_SAMPLES"]

BOOTSTRAP = 200  # resamples of the runs for a standard error: enough for two significant digits
FLOOR_REPEATS = 200  # i.i.d. samples of P* for the floor's mean and spread
SAMPLE_CHUNK = 100  # rows per generate_batch call for the one-output-per-run methods
SHOWN_OUTPUTS = 12  # outputs per constraint kept in the report for the side-by-side plot
LIMIT = 10_000  # token sequences a constraint's language may have
# Run i of a bench with --seed s uses seed s * SEED_STRIDE + i: different --seed values never share runs.
SEED_STRIDE = 1_000_000_007
METHODS = ("masking", "awrs", "smc", "smc-exact", "is", "asap")  # what run() can be restricted to
ASAP_SAMPLES = (10, 100, 1_000, 10_000)  # the points of ASAp's curve (the GAD paper's x axis)
ASAP_BATCH = 8  # samples per round of ASAp's batched schedule
KL_SHOWN = 1e-3  # the figure's log scale stops here: smaller KLs (0 within the floor) sit at the bottom


def _binary_even_ones() -> Any:
    from ..constraints import Regex

    even, odd = "(00|11)", "(01|10)"  # two digits adding an even / odd number of ones
    return Regex(f"({even}{even}|{odd}{odd}){{2}}|({even}{odd}|{odd}{even}){{2}}")


def _json_enum_bool() -> Any:
    from ..constraints import JSONSchema

    return JSONSchema({"type": "object", "properties": {"x": {"enum": ["a", "b", "c"]}, "y": {"type": "boolean"}},
                       "required": ["x", "y"], "additionalProperties": False})


def _regex(pattern: str) -> Callable[[], Any]:
    def make() -> Any:
        from ..constraints import Regex

        return Regex(pattern)

    return make


@dataclass(frozen=True)
class Case:
    """One constraint of the bench: a prompt (through the chat template when the tokenizer has
    one) and the constraint. ``biased``: the case built to show masking's distortion."""

    name: str
    prompt: str
    make: Callable[[], Any]
    about: str
    biased: bool = False


CASES = {c.name: c for c in [
    Case("binary", "Write a random 8-digit binary number with an even number of ones. Reply with the number only.",
         _binary_even_ones, "8 binary digits with an even number of ones (GAD-style; digits are single tokens)"),
    Case("json", "Give a JSON object with a field x (one of a, b, c) and a boolean y.", _json_enum_bool,
         'JSON Schema {"x": enum a/b/c, "y": boolean}, both required, additionalProperties false'),
    Case("words", "Name something you might find in a house. One word.",
         _regex("car|cart|carrot|cat|catalog|category|dog|door|doormat"), "words sharing prefixes, of different lengths"),
    Case("yesno", "Is the sky blue? Answer Yes or No.", _regex("Yes|No, [0-9]{2}"),
         "the model's favoured first token, No, must go on with an unlikely ', NN'; Yes ends at once", biased=True),
]}


@dataclass
class Draws:
    """Weighted outputs of a method's runs: entry ``k`` gives output ``output[k]`` weight
    ``weight[k]`` in run ``run[k]`` (each run's weights sum to 1; a run with no complete
    output has no entries and counts in ``failed``)."""

    index: dict[tuple[int, ...], int]
    runs: int = 0
    failed: int = 0
    run: list[int] = field(default_factory=list)
    output: list[int] = field(default_factory=list)
    weight: list[float] = field(default_factory=list)
    log_ml: list[float] = field(default_factory=list)  # SMC: each run's log P(L) estimate

    def add(self, outputs: Sequence[tuple[Sequence[int], float]]) -> None:
        """One run's complete outputs with their log weights."""
        if not outputs:
            self.failed += 1
        else:
            lw = np.array([w for _, w in outputs])
            w = np.exp(lw - np.logaddexp.reduce(lw)) if np.isfinite(lw).any() else np.full(len(lw), 1 / len(lw))
            for (tokens, _), x in zip(outputs, w):
                key = tuple(tokens)
                if key not in self.index:
                    raise CtrldecError(f"a sampler produced {list(key)}, which is not in the constraint's language")
                self.run.append(self.runs)
                self.output.append(self.index[key])
                self.weight.append(float(x))
        self.runs += 1

    def distribution(self, size: int, counts: np.ndarray | None = None) -> np.ndarray:
        """The estimate of the output distribution (``counts``: how often each run is taken)."""
        w = np.asarray(self.weight)
        if counts is not None:
            w = w * counts[np.asarray(self.run, dtype=np.int64)]
        q = np.bincount(np.asarray(self.output, dtype=np.int64), weights=w, minlength=size)
        return q / q.sum() if q.sum() > 0 else q

    def ess(self) -> float:
        """Kish's effective sample size of the pooled estimate, a run's copies of one output
        merged first (resampled duplicates are one draw): ``runs`` for one output per run."""
        if not self.output:
            return 0.0
        keys = np.asarray(self.run, dtype=np.int64) * (max(self.output) + 1) + np.asarray(self.output)
        _, where = np.unique(keys, return_inverse=True)
        merged = np.bincount(where, weights=self.weight) / (self.runs - self.failed)
        return float(1.0 / np.sum(merged ** 2))


def divergences(q: np.ndarray, p: np.ndarray, log_p: np.ndarray | None = None) -> dict[str, float]:
    """KL(q || p), total variation and (with ``log_p``, the model's log P(w)) E_q[log P(w)]."""
    seen = q > 0
    out = {"kl": float(np.sum(q[seen] * np.log(q[seen] / p[seen]))), "tv": float(0.5 * np.abs(q - p).sum())}
    if log_p is not None:
        out["e_log_p"] = float(np.sum(q[seen] * log_p[seen]))
    return out


def _summary(draws: Draws, exact: Exact, rng: np.random.Generator) -> dict[str, Any]:
    """The point estimates against P* and their bootstrap standard errors over runs."""
    size = len(exact.outputs)
    out: dict[str, Any] = divergences(draws.distribution(size), exact.p_star, exact.log_p)
    boot = [divergences(draws.distribution(size, np.bincount(rng.integers(0, draws.runs, draws.runs), minlength=draws.runs)),
                        exact.p_star, exact.log_p) for _ in range(BOOTSTRAP)]
    for key in ("kl", "tv", "e_log_p"):
        out[f"{key}_se"] = float(np.std([b[key] for b in boot], ddof=1))
    ess = draws.ess()
    out.update(runs=draws.runs, failed_runs=draws.failed, samples=len(draws.output), ess=ess,
               kl_floor=floor(exact.p_star, max(1, round(ess)), rng)["kl"])
    return out


def floor(p: np.ndarray, n: int, rng: np.random.Generator) -> dict[str, float]:
    """The plug-in KL(Q || p) and TV of ``n`` i.i.d. draws from ``p``: the bias a sampled
    estimate has even when its sampler is exact. Mean and spread over ``FLOOR_REPEATS`` repeats."""
    stats = [divergences(rng.multinomial(n, p) / n, p) for _ in range(FLOOR_REPEATS)]
    return {"kl": float(np.mean([s["kl"] for s in stats])), "kl_se": float(np.std([s["kl"] for s in stats], ddof=1)),
            "tv": float(np.mean([s["tv"] for s in stats])), "tv_se": float(np.std([s["tv"] for s in stats], ddof=1)),
            "samples": n}


@dataclass
class _Prepared:
    """A case made ready: its language, table, exact distributions and a decoder over the table."""

    case: Case
    constraint: Any
    prompt: list[int]
    sequences: list[tuple[int, ...]]
    exact: Exact
    decoder: Any
    nodes: int
    table_s: float

    @property
    def max_new_tokens(self) -> int:
        return max(len(s) for s in self.sequences)

    def generate_options(self) -> dict[str, Any]:
        # the constraint's own language: no budget narrowing (max_new_tokens holds every sequence anyway)
        return {"constraint": self.constraint, "max_new_tokens": self.max_new_tokens, "fast_forward": False, "budget_aware": False}


def prepare(model: Any, tokenizer: Any, case: Case, *, top: int = 256, progress: bool = False) -> _Prepared:
    """Enumerate the case's language, table the model on it, compute the exact distributions."""
    from ..generate import Decoder

    real = Decoder(model, tokenizer)
    constraint = case.make()
    started = time.perf_counter()
    sequences = enumerate_language(constraint, real.info, real.eos, LIMIT)
    prompt = real.encode_prompt(case.prompt)
    table = build_table(model, tokenizer, prompt, sequences, top=top, progress=progress)
    exact = exact_distributions(table, sequences)
    tabled = TabledModel(table, real.width, sorted(real.eos))
    return _Prepared(case, constraint, prompt, sequences, exact, Decoder(tabled, tokenizer), len(table),
                     time.perf_counter() - started)


def sample_single(prep: _Prepared, n: int, seed: int, sampler: Any = None) -> Draws:
    """``n`` generations (row ``i`` with seed ``seed + i``), batched; one output per run."""
    draws = Draws(prep.exact.index())
    options = prep.generate_options() | ({"sampler": sampler} if sampler is not None else {})
    for start in range(0, n, SAMPLE_CHUNK):
        rows = min(SAMPLE_CHUNK, n - start)
        for r in prep.decoder.generate_batch([prep.prompt] * rows, seed=seed + start, **options):
            draws.add([(r.token_ids, 0.0)] if r.finish_reason == "eos" else [])
    return draws


def sample_smc(prep: _Prepared, particles: int, runs: int, seed: int, weights: str = "estimate") -> Draws:
    """``runs`` SMC runs (seed ``seed + r``); each run's complete particles, weighted
    (``weights``: AWRS's estimate of each step's allowed mass, or the exact mass)."""
    from ..samplers.awrs import AWRS
    from ..search.smc import SMC

    draws = Draws(prep.exact.index())
    for r in range(runs):
        smc = SMC(particles=particles, sampler=AWRS(weights=weights))
        report = prep.decoder.generate(prep.prompt, seed=seed + r, sampler=smc,
                                       **prep.generate_options()).smc
        draws.add([(p.token_ids, w) for p, w in zip(report.particles, report.log_weights)
                   if p.finish_reason == "eos" and math.isfinite(w)])
        draws.log_ml.append(report.log_marginal_likelihood)
    return draws


def sample_is(prep: _Prepared, particles: int, runs: int, seed: int) -> Draws:
    """``runs`` runs of importance sampling from masking's exact distribution: ``particles``
    outputs drawn i.i.d. from Q_mask, each weighted by P(w) / Q_mask(w) exactly, no resampling.

    SMC whose proposal is masking's (AWRS's) and whose weights are exact ends with these weights;
    it can only do better where the weights of the steps before the end carry information that
    resampling acts on. This row is what SMC reaches without that information: where SMC-N sits
    on IS-N, its distance to P* is importance sampling's from this proposal. Computed from the
    tables alone (no decoding), in milliseconds."""
    exact = prep.exact
    support = exact.q_mask > 0
    log_w = np.full(len(exact.outputs), -math.inf)
    log_w[support] = exact.log_p[support] - np.log(exact.q_mask[support])
    rng = np.random.default_rng(seed)
    draws = Draws(exact.index())
    for picks in rng.choice(len(exact.outputs), size=(runs, particles), p=exact.q_mask):
        draws.add([(exact.outputs[i], float(log_w[i])) for i in picks])
        draws.log_ml.append(float(np.logaddexp.reduce(log_w[picks]) - math.log(particles)))
    return draws


def _smc_evidence(draws: Draws, name: str, particles: int, exact: Exact) -> dict[str, Any]:
    lml = np.array(draws.log_ml)
    finite = lml[np.isfinite(lml)]
    return {"method": name, "particles": particles, "runs": len(lml), "mean_log_ml": float(finite.mean()) if len(finite) else -math.inf,
            "log_mean_ml": float(np.logaddexp.reduce(lml) - math.log(len(lml))), "log_p_language": exact.log_p_language}


def _methods(prep: _Prepared, samples: int, particles: Sequence[int], seed: int, progress: bool,
             methods: Sequence[str] = METHODS):
    """Yield (name, draws, seconds, particles) for every sampled method of a case."""
    from ..samplers.awrs import AWRS

    base = seed * SEED_STRIDE
    plan: list[tuple[str, Callable[[], Draws], int]] = []
    if "masking" in methods:
        plan.append(("masking", lambda: sample_single(prep, samples, base), 1))
    if "awrs" in methods:
        plan.append(("AWRS", lambda: sample_single(prep, samples, base, AWRS()), 1))
    if "smc" in methods:
        plan += [(f"SMC-{n}", lambda n=n: sample_smc(prep, n, -(-samples // n), base), n) for n in particles]
    if "smc-exact" in methods:
        plan += [(f"SMC-{n} exact", lambda n=n: sample_smc(prep, n, -(-samples // n), base, "exact"), n) for n in particles]
    if "is" in methods:
        plan += [(f"IS-{n}", lambda n=n: sample_is(prep, n, -(-samples // n), base), n) for n in particles]
    for name, go, n in plan:
        started = time.perf_counter()
        draws = go()
        seconds = time.perf_counter() - started
        if progress:
            print(f"  {prep.case.name}: {name}: {draws.runs} runs, {len(draws.output)} weighted outputs, {seconds:.1f} s",
                  flush=True)
        yield name, draws, seconds, n


def run_case(prep: _Prepared, *, samples: int, particles: Sequence[int], seed: int = 0, progress: bool = False,
             methods: Sequence[str] = METHODS, asap_samples: Sequence[int] = ASAP_SAMPLES,
             asap_batch: int = ASAP_BATCH) -> dict[str, Any]:
    """Every method on one prepared case: the rows of its table, the checks, SMC's evidence, ASAp's curves."""
    exact, rng = prep.exact, np.random.default_rng(seed)
    rows: list[dict[str, Any]] = [{"method": "masking (exact)", "kind": "exact",
                                   **divergences(exact.q_mask, exact.p_star, exact.log_p)}]
    shown = {"P*": exact.p_star, "masking (exact)": exact.q_mask}
    check: dict[str, Any] = {}
    evidence = []
    for name, draws, seconds, n in _methods(prep, samples, particles, seed, progress, methods):
        rows.append({"method": name, "kind": "sampled", "particles": n, "seconds": seconds, **_summary(draws, exact, rng)})
        shown[name] = draws.distribution(len(exact.outputs))
        if name == "masking":
            base = floor(exact.q_mask, len(draws.output), rng)
            check = {**divergences(shown[name], exact.q_mask), "kl_floor": base["kl"], "tv_floor": base["tv"]}
        if draws.log_ml:
            evidence.append(_smc_evidence(draws, name, n, exact))
    e_star = float(np.sum(exact.p_star * exact.log_p))
    rows.append({"method": "P* draws (floor)", "kind": "floor", **floor(exact.p_star, samples, rng),
                 "e_log_p": e_star, "e_log_p_se": 0.0})
    return {
        "name": prep.case.name, "about": prep.case.about, "prompt": prep.case.prompt, "biased": prep.case.biased,
        "constraint": repr(prep.constraint), "sequences": len(prep.sequences), "outputs": len(exact.outputs),
        "nodes": prep.nodes, "table_s": prep.table_s, "log_p_language": exact.log_p_language, "e_log_p_star": e_star,
        "kl_p_star_q_mask": divergences(exact.p_star, exact.q_mask)["kl"], "rows": rows, "masking_check": check,
        "smc": evidence, "shown": _shown(prep, shown), **_by_string(prep, shown),
        "asap": _asap_curves(prep, asap_samples, asap_batch, seed, progress) if "asap" in methods else [],
    }


def asap_distribution(prep: _Prepared, oracle: Any) -> np.ndarray:
    """ASAp's exact sampling distribution over ``prep``'s outputs with ``oracle`` as it is.

    Q(w) = the product over w's tokens x (EOS included) of p(x | u)·EFG~(u x) / sum over the tokens
    y allowed at u of p(y | u)·EFG~(u y), with EFG~ = 1 for EOS and for a child the trie does not
    hold (the sampler's rule); tokenizations of one output (and its EOS ids) summed."""
    table, eos = prep.decoder.model.table, frozenset(prep.decoder.eos)
    steps: dict[int, tuple[dict[int, float], float]] = {}  # table node -> (log p·EFG~ per child, log normaliser)

    def at(node: int, trie: int) -> tuple[dict[int, float], float]:
        if node not in steps:
            logs = {int(c): table.log_prob(node, int(c)) + (0.0 if int(c) in eos else
                                                            math.log(max(oracle.efg(oracle.child(trie, int(c))), 1e-300)))
                    for c in table.children[node]}
            steps[node] = (logs, float(np.logaddexp.reduce(list(logs.values()))))
        return steps[node]

    log_q: dict[tuple[int, ...], list[float]] = {}
    for s in prep.sequences:
        total, trie = 0.0, 0
        for j, x in enumerate(s):
            logs, norm = at(table.node(s[:j]), trie)
            total += logs[x] - norm
            trie = oracle.child(trie, x)
        log_q.setdefault(s[:-1], []).append(total)
    return np.exp(np.array([np.logaddexp.reduce(log_q[w]) for w in prep.exact.outputs]))


def asap_curve(prep: _Prepared, checkpoints: Sequence[int], batch: int, seed: int,
               progress: bool = False) -> list[dict[str, Any]]:
    """ASAp from a fresh oracle, ``batch`` samples per round (one ``generate_batch`` call each),
    until each checkpoint n; at each, the exact distribution's KL to P*, TV and E_Q[log P]."""
    from ..search.asap import ASAp

    config = ASAp()
    exact, done, out = prep.exact, 0, []
    started = time.perf_counter()
    for n in sorted(set(checkpoints)):
        while done < n:
            rows = min(batch, n - done)
            prep.decoder.generate_batch([prep.prompt] * rows, seed=seed + done, sampler=config, **prep.generate_options())
            done += rows
        q = asap_distribution(prep, config.oracle)
        out.append({"n": n, "batch": batch, "nodes": len(config.oracle), "seconds": time.perf_counter() - started,
                    "log_p_language_bound": config.oracle.log_p_language_bound,
                    **divergences(q, exact.p_star, exact.log_p)})
        if progress:
            print(f"  {prep.case.name}: ASAp B={batch} n={n}: KL {out[-1]['kl']:.4f}, {len(config.oracle)} nodes, "
                  f"{out[-1]['seconds']:.1f} s", flush=True)
    return out


def _asap_curves(prep: _Prepared, checkpoints: Sequence[int], batch: int, seed: int, progress: bool) -> list[dict[str, Any]]:
    """One row per checkpoint: B = 1 and B = ``batch`` side by side (the second omitted for batch 1)."""
    base = seed * SEED_STRIDE
    single = asap_curve(prep, checkpoints, 1, base, progress)
    batched = asap_curve(prep, checkpoints, batch, base, progress) if batch > 1 else []
    return [{**a, "batched": b} for a, b in zip(single, batched or [None] * len(single))]


def _by_string(prep: _Prepared, dists: dict[str, np.ndarray]) -> dict[str, Any]:
    """KL(Q || P*) with the tokenizations of each string merged: how far each method is on the
    text alone (masking's mass on non-canonical tokenizations then no longer counts)."""
    keys = [prep.decoder.info.decode_bytes(w) for w in prep.exact.outputs]
    _, where = np.unique(keys, return_inverse=True)
    merged = {name: np.bincount(where, weights=d) for name, d in dists.items()}
    target = merged.pop("P*")
    return {"strings": len(target), "string_kl": {name: divergences(q, target)["kl"] for name, q in merged.items()}}


def _shown(prep: _Prepared, dists: dict[str, np.ndarray]) -> dict[str, Any]:
    """The ``SHOWN_OUTPUTS`` outputs most likely under any distribution, tokens split by ``|``."""
    top = np.argsort(-np.max(np.stack(list(dists.values())), axis=0), kind="stable")[:SHOWN_OUTPUTS]
    pieces = prep.decoder.info.token_bytes
    labels = ["|".join(pieces[t].decode("utf-8", "replace") for t in prep.exact.outputs[i]) for i in top]
    return {"outputs": labels, **{name: [float(d[i]) for i in top] for name, d in dists.items()}}


def pick_cases(cases: Sequence[str | Case] | None) -> list[Case]:
    """``Case`` objects for names of ``CASES`` (all of them for None); ``CtrldecError`` naming the choices."""
    if cases is None:
        return list(CASES.values())
    unknown = [c for c in cases if isinstance(c, str) and c not in CASES]
    if unknown:
        raise CtrldecError(f"unknown constraint(s) {', '.join(unknown)}; the bench has: {', '.join(CASES)}")
    return [CASES[c] if isinstance(c, str) else c for c in cases]


def run(model: Any, tokenizer: Any, *, samples: int = 10_000, particles: Sequence[int] = (4, 16, 64),
        cases: Sequence[str | Case] | None = None, seed: int = 0, top: int = 256, progress: bool = False,
        methods: Sequence[str] = METHODS, asap_samples: Sequence[int] = ASAP_SAMPLES,
        asap_batch: int = ASAP_BATCH) -> dict[str, Any]:
    """The whole bench: every case (``CASES`` names, or ``Case`` objects), every method.

    ``samples``: outputs per sampled method: generations for masking and AWRS, particles for
    SMC (``ceil(samples / N)`` runs of N particles). ``top``: tokens tabled per node beyond the
    trie's own (``NextTokenTable``). ``methods``: a subset of ``METHODS`` (the exact masking row
    and the P* floor are always there). ``asap_samples``: the points of ASAp's curves (empty: no
    ASAp); ``asap_batch``: samples per round of its batched schedule."""
    if samples < 2:
        raise CtrldecError(f"samples must be at least 2 (a bootstrap needs two runs), got {samples}")
    if any(n < 1 for n in particles):
        raise CtrldecError(f"particles must be positive, got {list(particles)}")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise CtrldecError(f"unknown method(s) {', '.join(unknown)}; the bench has: {', '.join(METHODS)}")
    if any(n < 1 for n in asap_samples) or asap_batch < 1:
        raise CtrldecError(f"ASAp's sample counts and batch must be positive, got {list(asap_samples)} and {asap_batch}")
    report: dict[str, Any] = {"samples": samples, "particles": list(particles), "seed": seed, "top": top,
                              "methods": list(methods), "asap_samples": list(asap_samples), "asap_batch": asap_batch,
                              "cases": []}
    started = time.perf_counter()
    for case in pick_cases(cases):
        if progress:
            print(f"{case.name}: {case.about}", flush=True)
        prep = prepare(model, tokenizer, case, top=top, progress=progress)
        if progress:
            print(f"  {len(prep.sequences)} token sequences, {prep.nodes} trie nodes tabled in {prep.table_s:.1f} s", flush=True)
        report["cases"].append(run_case(prep, samples=samples, particles=particles, seed=seed, progress=progress,
                                        methods=methods, asap_samples=asap_samples, asap_batch=asap_batch))
    report["seconds"] = time.perf_counter() - started
    return report


def _cell(value: float | None, width: int, digits: int = 3) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def format_case(c: dict[str, Any]) -> str:
    lines = [f"{c['name']}: {c['about']}",
             f"  |L| = {c['sequences']} token sequences ({c['outputs']} outputs), {c['nodes']} trie nodes tabled in "
             f"{c['table_s']:.1f} s; log P(L) = {c['log_p_language']:.3f}, E_P*[log P] = {c['e_log_p_star']:.3f}",
             f"  {'method':<18}{'KL(Q||P*)':>10}{'SE':>8}{'floor':>8}{'TV':>8}{'SE':>8}{'E_Q[log P]':>11}{'SE':>7}"
             f"{'runs':>7}{'ESS':>7}{'time s':>8}"]
    for r in c["rows"]:
        lines.append(f"  {r['method']:<18}{_cell(r['kl'], 10, 4)}{_cell(r.get('kl_se'), 8, 4)}{_cell(r.get('kl_floor'), 8, 4)}"
                     f"{_cell(r['tv'], 8)}{_cell(r.get('tv_se'), 8)}{_cell(r['e_log_p'], 11, 2)}"
                     f"{_cell(r.get('e_log_p_se') or None, 7, 2)}{r.get('runs', '-'):>7}{_cell(r.get('ess'), 7, 0)}"
                     f"{_cell(r.get('seconds'), 8, 1)}")
    failed = {r["method"]: r["failed_runs"] for r in c["rows"] if r.get("failed_runs")}
    if failed:
        lines.append(f"  runs without a complete output (left out): {failed}")
    m = c["masking_check"]
    if m:
        lines.append(f"  masking, exact KL(P*||Q) = {c['kl_p_star_q_mask']:.3f}; sampled vs exact masking: KL {m['kl']:.4f} "
                     f"(floor {m['kl_floor']:.4f}), TV {m['tv']:.4f} (floor {m['tv_floor']:.4f})")
    if c["strings"] < c["outputs"]:
        lines.append(f"  over its {c['strings']} strings (tokenizations merged), KL(Q||P*): "
                     + ", ".join(f"{name} {kl:.4f}" for name, kl in c["string_kl"].items()))
    for e in c["smc"]:
        lines.append(f"  {e.get('method', 'SMC-' + str(e['particles']))} log P(L) estimate over {e['runs']} runs: mean of log {e['mean_log_ml']:.3f}, "
                     f"log of mean {e['log_mean_ml']:.3f} (exact {e['log_p_language']:.3f})")
    lines += _format_asap(c)
    return "\n".join(lines)


def _format_asap(c: dict[str, Any]) -> list[str]:
    curve = c.get("asap") or []
    if not curve:
        return []
    batch = next((r["batched"]["batch"] for r in curve if r["batched"]), None)
    lines = ["  ASAp after n samples, exact distribution from the trie (B=1: trie updated after every sample"
             + (f"; B={batch}: after every round of {batch})" if batch else ")"),
             f"  {'n':>8}{'KL(Q||P*)':>11}{'TV':>8}{'E_Q[log P]':>11}{'log EFG~':>10}{'nodes':>7}{'time s':>8}"
             + (f"{f'KL B={batch}':>11}{'TV':>8}{'E_Q[log P]':>11}{'time s':>8}" if batch else "")]
    for r in curve:
        b = r["batched"]
        lines.append(f"  {r['n']:>8}{_cell(r['kl'], 11, 4)}{_cell(r['tv'], 8)}{_cell(r['e_log_p'], 11, 2)}"
                     f"{_cell(r['log_p_language_bound'], 10, 3)}{r['nodes']:>7}{_cell(r['seconds'], 8, 1)}"
                     + (f"{_cell(b['kl'], 11, 4)}{_cell(b['tv'], 8)}{_cell(b['e_log_p'], 11, 2)}{_cell(b['seconds'], 8, 1)}"
                        if b else ""))
    mask = c["rows"][0]["kl"]
    at = next((r for r in curve if r["n"] == 1000), curve[-1])
    lines.append(f"  ASAp at n={at['n']}: KL {at['kl']:.4f} = {at['kl'] / mask if mask > 0 else math.inf:.3f} of masking's "
                 f"{mask:.4f}; KL decreasing with n: {all(a['kl'] >= b['kl'] for a, b in zip(curve, curve[1:]))}")
    return lines


def format_report(report: dict[str, Any]) -> str:
    head = (f"Fidelity to P*(w) = P(w)/P(L): {report['samples']} samples per sampled method (SMC: particles over "
            f"ceil(samples/N) runs), seed {report['seed']}, top {report['top']} tokens tabled per node")
    foot = ("KL(Q||P*): exact for 'masking (exact)', else the plug-in estimate from the samples (SE: bootstrap over runs).\n"
            "floor: that estimate's mean for as many i.i.d. draws from P* itself as the method's effective sample size\n"
            "(ESS: Kish's, a run's copies of an output merged); the last row: n = samples i.i.d. draws from P* (SE: spread).")
    return "\n\n".join([head, *(format_case(c) for c in report["cases"]), foot, f"total {report.get('seconds', 0):.0f} s"])


def figure(report: dict[str, Any]) -> Any:
    """KL against particles for every case (SMC with estimated and exact weights, importance
    sampling from masking, masking itself), and the biased case's outputs under P*, masking and
    SMC side by side (a matplotlib ``Figure``)."""
    from matplotlib.lines import Line2D

    from .plots import figure as new_figure

    fig = new_figure(12, 4.5)
    left, right = fig.subplots(1, 2, width_ratios=[1, 1.4])
    styles = {"SMC (N=1: AWRS)": ("o", "-"), "SMC, exact weights": ("s", ":"), "IS from masking": ("d", "-.")}
    shown: set[str] = set()
    for k, c in enumerate(report["cases"]):
        color = f"C{k}"
        rows = {r["method"]: r for r in c["rows"]}
        def rows_of(prefix: str, exact: bool = False) -> list[tuple[int, dict[str, Any]]]:
            return [(r["particles"], r) for r in c["rows"]
                    if r["method"].startswith(prefix) and r["method"].endswith(" exact") == exact]

        curves = {"SMC (N=1: AWRS)": ([(1, rows["AWRS"])] if "AWRS" in rows else []) + rows_of("SMC-"),
                  "SMC, exact weights": rows_of("SMC-", exact=True), "IS from masking": rows_of("IS-")}
        for name, points in curves.items():
            if not points:
                continue
            shown.add(name)
            marker, line = styles[name]
            left.errorbar([n for n, _ in points], [max(r["kl"], KL_SHOWN) for _, r in points],
                          yerr=[r["kl_se"] for _, r in points], marker=marker, linestyle=line, color=color, capsize=3,
                          alpha=0.6 if name == "IS from masking" else 1.0)
            if name != "IS from masking":
                left.plot([n for n, _ in points], [max(r["kl_floor"], KL_SHOWN) for _, r in points], marker="x",
                          linestyle="none", color=color)
        left.axhline(rows["masking (exact)"]["kl"], color=color, linestyle="--", linewidth=1)
    ticks = [1, *report["particles"]]
    left.set(xscale="log", yscale="log", xlabel="particles N", ylabel="KL(Q || P*)",
             title="KL to the target (dashed: masking; x: floor at the ESS)")
    left.set_ylim(bottom=KL_SHOWN / 2)
    left.set_xticks(ticks, [str(n) for n in ticks])
    left.minorticks_off()
    handles = [Line2D([], [], color=f"C{k}", linewidth=3, label=c["name"]) for k, c in enumerate(report["cases"])]
    handles += [Line2D([], [], color="gray", marker=styles[name][0], linestyle=styles[name][1], label=name)
                for name in styles if name in shown]
    left.legend(handles=handles, fontsize=8, ncol=2, loc="lower left")
    _bars(right, report)
    return fig


def _bars(ax: Any, report: dict[str, Any]) -> None:
    cases = report["cases"]
    case = next((c for c in cases if c["biased"]), max(cases, key=lambda c: c["rows"][0]["kl"]))
    shown = case["shown"]
    smc = [k for k in shown if k.startswith("SMC-")]
    names = ["P*", "masking (exact)"] + (["SMC-16"] if "SMC-16" in smc else smc[-1:])
    x = np.arange(len(shown["outputs"]))
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        ax.bar(x + (j - (len(names) - 1) / 2) * width, shown[name], width, label=name)
    ax.set_xticks(x, shown["outputs"], rotation=60, ha="right", fontsize=7)
    ax.set(ylabel="probability", title=f"{case['name']}: each output (tokens split by |)")
    ax.legend(fontsize=8)


def plot(report: dict[str, Any], path: str) -> None:
    """Save ``figure(report)`` as an image (PNG, SVG, PDF: by the file name)."""
    figure(report).savefig(path, dpi=120)
