"""ctrldec's own decoding loop, the public facade: ``generate``, ``Decoder``, ``custom_generate``.

What it does that a logits processor cannot:

* **Fast-forward**: tokens the constraint fixes (``Matcher.forced_tokens``, canonically
  tokenized) are fed to the model together with the rest of a step, not one pass each.
* **Mask-free constrained sampling**: candidates are tested with ``Matcher.accepts`` in Gumbel
  (or probability) order; a full mask only past ``max_checks`` tests (``samplers``).
* **Prompt lookup**: drafts copied from the prompt, kept while the model's own draws agree;
  ``speculative=Speculative([...])`` adds Token Recycling trees, early-exit self-drafts and any
  same-tokenizer draft model, verified exactly (``speculative``).
* **Batches**: ``generate_batch`` decodes several prompts with one forward pass per step.
* Stop strings, streaming, and a result with per-token log-probabilities, kinds (sampled /
  forced), checks and timing.

The loop itself is ``decoding.loop.run`` over a strategy (``search.Sampling``) built from a
sampler (``samplers``), drafters and a verifier (``speculative``) and controllers.

>>> import ctrldec                                                          # doctest: +SKIP
>>> model, tok = ctrldec.models.load()                                      # doctest: +SKIP
>>> out = ctrldec.generate(model, tok, "A cat as JSON:", constraint=ctrldec.JSONSchema(schema),
...                        greedy=True)                                     # doctest: +SKIP
>>> out.text, out.finish_reason, out.kinds.count("forced")                  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence as Seq
from dataclasses import dataclass, field
from typing import Any

import torch

from .constraints.grammar import Constraint
from .controllers.base import Controls
from .decoding.loop import Batch, Strategy, StrategyFactory, run
from .decoding.runner import Runner
from .decoding.sequence import GenerationResult, Sequence
from .engine.budget import budgeted
from .engine.matcher import Matcher, Unconstrained
from .errors import CtrldecError
from .samplers.base import SamplingParams, TokenSampler
from .samplers.full_mask import FullMask
from .samplers.sampling import MAX_CHECKS, Greedy, Multinomial
from .search.sampling import Sampling
from .ead import EntropySwitch
from .speculative.config import Speculative
from .speculative.drafters import Drafter, ForcedText, PromptLookup
from .vocab import tokenizer_info

__all__ = ["Decoder", "GenerationResult", "generate", "custom_generate"]

Prompt = str | Seq[int] | list[dict]
_SAMPLING = ("greedy", "temperature", "top_k", "top_p", "min_p", "max_checks")


@dataclass(frozen=True)
class _Options:
    """The keyword arguments of ``Decoder.stream``, checked once."""

    constraint: Constraint | Seq[Constraint | None] | None = None  # generate_batch: one per prompt too
    max_new_tokens: int = 256
    greedy: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    seed: int | None = None
    stop: Seq[str] = ()
    fast_forward: bool = True
    lookahead: int = 8
    max_checks: int = MAX_CHECKS
    chat: bool = True
    system: str | None = None
    controllers: Seq[Any] = field(default=())
    diagnostics: bool = False
    sampler: TokenSampler | StrategyFactory | None = None  # replaces greedy/temperature/top_k/top_p/min_p/max_checks
    drafters: Seq[Drafter] | None = None  # replaces fast_forward/lookahead
    budget_aware: bool | None = None  # None: on wherever there is a constraint, except under ASAp
    search: StrategyFactory | None = None  # ContrastiveSearch, BeamSearch, DiverseBeamSearch: decides every token
    speculative: Speculative | None = None  # replaces drafters/fast_forward/lookahead
    ead: EntropySwitch | None = None  # a small model writes the low-entropy stretches

    @classmethod
    def from_kwargs(cls, options: dict[str, Any]) -> _Options:
        unknown = sorted(set(options) - set(cls.__dataclass_fields__))
        if unknown:
            raise CtrldecError(f"unknown option(s) {', '.join(unknown)}; the options are: {', '.join(cls.__dataclass_fields__)}")
        for name, kind in (("speculative", Speculative), ("ead", EntropySwitch)):
            if options.get(name) is not None and not isinstance(options[name], kind):
                raise CtrldecError(f"{name}= takes ctrldec.{kind.__name__}(...), got {options[name]!r}")
        for part, replaced in (("sampler", _SAMPLING), ("drafters", ("fast_forward", "lookahead")),
                               ("speculative", ("drafters", "fast_forward", "lookahead"))):
            clash = sorted(k for k in replaced if k in options)
            if part == "sampler" and isinstance(options.get(part), StrategyFactory) and options.get("greedy"):
                raise CtrldecError(f"greedy=True with sampler={options['sampler']!r}: greedy decoding is meaningless for a "
                                   "sampler that corrects a sampling distribution (SMC, ASAp); "
                                   "drop greedy=True, or drop sampler= for greedy decoding")
            if options.get(part) is not None and clash:
                raise CtrldecError(f"{part}= replaces {', '.join(clash)}: give those to the {part}, not both")
        if options.get("search") is not None:
            _check_search(options)
        _check_refusals(options)
        return cls(**options)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise CtrldecError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.lookahead < 0:
            raise CtrldecError(f"lookahead must be >= 0, got {self.lookahead}")
        if self.budget_aware and self._asap():
            raise CtrldecError("budget_aware=True with sampler=ASAp(...): ASAp's oracle learns the constraint's "
                               "language, and the budget narrows it per call; drop one of the two")
        if self.greedy and self.controllers:
            raise CtrldecError(f"greedy=True with controllers={list(self.controllers)!r}: greedy takes the argmax, which no "
                               "controller changes (Mirostat keeps the top token, a temperature keeps the order); "
                               "drop greedy=True to sample, or drop the controllers")
        if self.sampler is not None and (self.controllers or self.diagnostics):
            raise CtrldecError(f"controllers= and diagnostics= cannot be combined with sampler={self.sampler!r}: give "
                               "the controllers to the sampler (AWRS(controllers=[...]), FullMask(params, Controls([...])))")

    def _asap(self) -> bool:
        return type(self.sampler).__name__ == "ASAp"

    def budget(self, constraint: Constraint | None) -> int | None:
        """The token budget a sequence under ``constraint`` completes within (None: no budget)."""
        on = self.budget_aware if self.budget_aware is not None else constraint is not None and not self._asap()
        return self.max_new_tokens if on else None

    def controls(self) -> Controls:
        """The controllers every sequence keeps states for."""
        if self.search is not None:
            return self.search.controls
        return self.sampler.controls if self.sampler is not None else Controls(self.controllers)

    def make_strategy(self, controls: Controls, decoder: Decoder) -> Strategy:
        drafters = self.make_drafters(decoder)
        if self.search is not None:
            return self.search.strategy(drafters)
        if isinstance(self.sampler, StrategyFactory):
            return self.sampler.strategy(drafters)
        return Sampling(self.make_sampler(controls), drafters, sizer=self.speculative.sizer if self.speculative else None)

    def make_sampler(self, controls: Controls) -> TokenSampler:
        if self.sampler is not None:
            return self.sampler  # type: ignore[return-value]
        params = SamplingParams(greedy=self.greedy, temperature=self.temperature, top_k=self.top_k, top_p=self.top_p,
                                min_p=self.min_p)
        if controls or self.diagnostics:
            return FullMask(params, controls)
        return Greedy(self.max_checks) if params.greedy else Multinomial(params, self.max_checks)

    def make_drafters(self, decoder: Decoder) -> list[Drafter]:
        if self.speculative is not None:
            return self.speculative.build(decoder.model, decoder.tokenizer, decoder.width, self.temperature_of_drafts())
        if self.drafters is not None:
            return list(self.drafters)
        return ([ForcedText()] if self.fast_forward else []) + ([PromptLookup(self.lookahead)] if self.lookahead else [])


    def temperature_of_drafts(self) -> float | None:
        """The temperature model drafters sample at (None: the target is greedy, so they draft greedily)."""
        params = getattr(self.sampler, "params", None) if self.sampler is not None else None
        if self.sampler is not None and params is None:
            return None if isinstance(self.sampler, Greedy) else 1.0
        greedy, temperature = (params.greedy, params.temperature) if params is not None else (self.greedy, self.temperature)
        return None if greedy else temperature


def _check_refusals(options: dict[str, Any]) -> None:
    """A sampler or search may refuse other options (its ``refuses``: option -> why); name both."""
    given = {"speculative": options.get("speculative") is not None and options["speculative"].speculates,
             "ead": options.get("ead") is not None, "controllers": bool(options.get("controllers"))}
    for part in ("sampler", "search"):
        factory = options.get(part)
        for option, why in getattr(factory, "refuses", {}).items():
            if given.get(option):
                raise CtrldecError(f"{part}={factory!r} cannot be combined with {option}={options[option]!r}: {why}; "
                                   "drop one of the two")


def _check_search(options: dict[str, Any]) -> None:
    """``search=`` decides every token itself: refuse what it cannot honour, naming both."""
    search = options["search"]
    if not isinstance(search, StrategyFactory):
        raise CtrldecError(f"search= takes ctrldec.ContrastiveSearch(...), BeamSearch(...) or DiverseBeamSearch(...), "
                           f"got {search!r}")
    defaults = {k: f.default for k, f in _Options.__dataclass_fields__.items()}
    clash = [f"{k}={options[k]!r}" for k in (*_SAMPLING, "sampler", "controllers", "diagnostics")
             if k in options and options[k] != defaults[k] and options[k] is not None]
    if options.get("lookahead"):
        clash.append(f"lookahead={options['lookahead']!r} (prompt lookup drafts are checked against a sampler)")
    if any(not isinstance(d, ForcedText) for d in options.get("drafters") or ()):
        clash.append("drafters= with a speculative drafter")
    if options.get("speculative") is not None and options["speculative"].speculates:
        clash.append(f"speculative={options['speculative']!r} (drafts are checked against a sampler's draws)")
    if clash:
        raise CtrldecError(f"search={search!r} cannot be combined with {', '.join(clash)}: a search decides every "
                           "token itself; drop one of the two")


class Decoder:
    """The decoding loop for one model and tokenizer (see the module docstring). Holds no
    per-generation state: one decoder serves concurrent calls from several threads."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.runner = Runner(model, pad_token_id=tokenizer.pad_token_id or 0)
        self.width = self.runner.width
        self.info = tokenizer_info(tokenizer, self.width if self.width != len(tokenizer) else None)
        eos = model.generation_config.eos_token_id if model.generation_config.eos_token_id is not None else tokenizer.eos_token_id
        self.eos = frozenset(eos if isinstance(eos, list) else [eos]) | frozenset(self.info.eos_token_ids)
        self.last_result: GenerationResult | None = None

    # -- prompts ------------------------------------------------------------------------------------

    def encode_prompt(self, prompt: Prompt, *, chat: bool = True, system: str | None = None) -> list[int]:
        """Token ids for a prompt: text (through the chat template when there is one), chat
        messages, or ids as they are."""
        if isinstance(prompt, str) and not prompt.strip():
            raise CtrldecError("the prompt is empty: give some text, chat messages or token ids")
        if isinstance(prompt, (list, tuple)) and (not prompt or isinstance(prompt[0], int)):
            ids = list(prompt)
        elif isinstance(prompt, list):
            ids = self._chat(prompt)
        elif chat and getattr(self.tokenizer, "chat_template", None):
            messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
            ids = self._chat(messages)
        else:
            ids = self.tokenizer(prompt, add_special_tokens=True)["input_ids"]
        if not ids:
            raise CtrldecError("the prompt is empty: give some text or token ids")
        return ids

    def _chat(self, messages: list[dict]) -> list[int]:
        out = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
        out = out if torch.is_tensor(out) else out["input_ids"]
        return out[0].tolist()

    # -- generation ---------------------------------------------------------------------------------

    def matcher(self, constraint: Constraint | None, *, budget: int | None = None) -> Matcher:
        """A fresh matcher for one sequence (``Unconstrained`` without a constraint); with
        ``budget``, limited to outputs complete within that many tokens (``engine.budget``)."""
        if constraint is None:
            if budget is not None:
                raise CtrldecError("budget_aware=True needs a constraint: without one every output is complete")
            return Unconstrained(self.info.vocab_size, self.eos)
        matcher = constraint.compile(self.info).matcher()
        return matcher if budget is None else budgeted(matcher, budget)

    def _batch(self, prompts: Seq[Prompt], options: _Options) -> tuple[Batch, Strategy]:
        controls = options.controls()
        strategy = options.make_strategy(controls, self)
        constraints = options.constraint if isinstance(options.constraint, (list, tuple)) else [options.constraint] * len(prompts)
        if len(constraints) != len(prompts):
            raise CtrldecError(f"{len(constraints)} constraints for {len(prompts)} prompts: give one, or one per prompt")
        sequences = [
            Sequence(self.encode_prompt(p, chat=options.chat, system=options.system),
                     self.matcher(c, budget=options.budget(c)),
                     self.info, self.eos, max_new_tokens=options.max_new_tokens,
                     rng=None if options.seed is None else torch.Generator().manual_seed(options.seed + i),
                     controls=controls, record=options.diagnostics or bool(controls), stop=options.stop, constraint=c)
            for i, (p, c) in enumerate(zip(prompts, constraints))
        ]
        if options.ead is None:
            return Batch(self.runner, sequences), strategy
        for seq in sequences:
            seq.producer = "small"  # forced tokens before the first pass: every sequence starts on the small model
        return Batch(options.ead.runner(self.runner, self.tokenizer), sequences), strategy

    def stream(self, prompt: Prompt, **options: Any) -> Iterator[str]:
        """Yield the output text as it is produced; the generator's return value (``StopIteration.value``,
        or ``Decoder.last_result``) is the ``GenerationResult``.

        Options (all keyword): ``constraint``; ``max_new_tokens`` (256); ``greedy`` or
        ``temperature``, ``top_k``, ``top_p``, ``min_p`` (applied in that order to the constrained
        distribution); ``seed``; ``stop`` strings; ``fast_forward`` (True); ``lookahead``: up to
        this many tokens drafted by prompt lookup and checked in the same pass by
        sample-and-compare, so the output distribution is exactly that of one-token-at-a-time
        decoding (8; 0 turns it off); ``max_checks`` (64) before a full mask; ``chat`` and
        ``system`` (the chat template); ``budget_aware``: only tokens after which a complete
        output still fits in ``max_new_tokens`` (``engine.budget``: the output is complete and
        valid when the budget runs out; ``BudgetError`` before generating if the shortest output
        cannot fit). The default (None) is on wherever there is a constraint, except with
        ``sampler=ASAp(...)`` (its oracle learns the constraint's own language); False gives
        the constraint's language cut at ``max_new_tokens`` (``truncated`` outputs); ``controllers``: ``Mirostat`` and/or
        ``EntropyTemperature``, applied in order to the constrained distribution before
        temperature, top-k, top-p, min-p (the order ``model.generate`` applies
        ``logits_processor=[grammar, *controllers]`` in; with the same seed the draws are the
        same). Controllers need the whole distribution, so sampled steps compute the full mask.
        Each sequence has its own controller state; forced tokens leave it unchanged.
        ``diagnostics=True`` (implied by controllers) fills ``GenerationResult.steps``.
        ``sampler=``: any ``TokenSampler`` instead of the one the sampling options describe
        (``AWRS()``), or ``SMC(particles=N)`` (sequential Monte Carlo: ``result.smc``);
        ``drafters=``: a list of ``Drafter`` instead of ``[ForcedText(), PromptLookup(lookahead)]``;
        ``speculative=``: ``Speculative(drafters, max_draft, adaptive, ...)``, drafters by name
        (``forced``, ``prompt_lookup``, ``recycling``, ``early_exit``, ``model``), all verified
        exactly (``timing["draft_accepted/<name>"]``, ``timing["verified/<name>"]``);
        ``ead=``: ``EntropySwitch(small, window, threshold, min_dwell)``, entropy-adaptive
        decoding: a small model (by default the target's own first layers) writes while the
        rolling entropy is low, the full one while it is high (``result.models``, lossy by design);
        ``search=``: ``ContrastiveSearch(alpha, k)``, ``BeamSearch(beams)`` or
        ``DiverseBeamSearch(beams, groups, diversity)`` decide every token instead of a sampler
        (fast-forward still applies; beam searches put every hypothesis in ``result.search``).
        """
        batch, strategy = self._batch([prompt], _Options.from_kwargs(options))
        streamed = getattr(strategy, "streamed", None)  # a strategy whose sequence is replaced as it goes
        sent = ""
        for _ in run(strategy, batch):
            seq = streamed(batch) if streamed is not None else batch.sequences[0]
            delta = seq.take_delta()
            sent += delta
            if delta:
                yield delta
        result = strategy.results(batch)[0]
        if result.text.startswith(sent) and len(result.text) > len(sent):
            yield result.text[len(sent):]  # what the sequence held back, or SMC's chosen particle
        self.last_result = result
        return result

    def generate(self, prompt: Prompt, **options: Any) -> GenerationResult:
        """Generate for one prompt; the options are those of ``stream``."""
        it = self.stream(prompt, **options)
        while True:
            try:
                next(it)
            except StopIteration as done:
                return done.value

    def generate_batch(self, prompts: Seq[Prompt], **options: Any) -> list[GenerationResult]:
        """Independent prompts, one result each, decoded together: one forward pass per step
        for every row still going (rows of different lengths are padded and masked). Each row
        keeps its own matcher, fast-forward, drafts and random stream (``seed + i``), so each
        result is what ``generate(prompts[i], seed=seed + i)`` gives. ``constraint`` may be one
        for all rows or a list with one per prompt (None: unconstrained)."""
        if not prompts:
            return []
        batch, strategy = self._batch(prompts, _Options.from_kwargs(options))
        for _ in run(strategy, batch):
            pass
        return strategy.results(batch)


def generate(model: Any, tokenizer: Any, prompt: Prompt, **kwargs: Any) -> GenerationResult:
    """One-call form of ``Decoder(model, tokenizer).generate(prompt, **kwargs)``."""
    return Decoder(model, tokenizer).generate(prompt, **kwargs)


def custom_generate(constraint: Constraint | None = None, *, tokenizer: Any, **options: Any):
    """ctrldec's loop as a ``custom_generate=`` callable for ``model.generate``.

    >>> run = ctrldec.custom_generate(ctrldec.Regex("yes|no"), tokenizer=tok)          # doctest: +SKIP
    >>> out = model.generate(ids, custom_generate=run, max_new_tokens=5, do_sample=False)  # doctest: +SKIP
    >>> out = model.generate(ids, custom_generate=run, num_beams=6, num_beam_groups=3,
    ...                      diversity_penalty=0.5, num_return_sequences=6)              # doctest: +SKIP

    ``max_new_tokens``, ``do_sample``, ``temperature``, ``top_k``, ``top_p`` and ``min_p`` come
    from the generation config, and so do transformers' search arguments, with their 4.x meaning
    (the strategies transformers 4.56/4.57 moved to remote code): ``penalty_alpha`` with
    ``top_k`` > 1 is ``ContrastiveSearch``; ``num_beams`` > 1 is ``BeamSearch`` (with
    ``length_penalty``, ``early_stopping``), or ``DiverseBeamSearch`` with ``num_beam_groups`` and
    ``diversity_penalty``; ``num_return_sequences`` rows per prompt come back (the best
    hypotheses first). With ``sampler=`` among ``options`` (``AWRS()``, ``SMC(particles=8)``) the
    sampler decides and the generation config's sampling arguments are not used. ``ead=``,
    ``speculative=``, ``controllers=`` and the other options of ``Decoder.stream`` pass through.
    Other logits processors passed to ``model.generate`` are not applied (the
    loop decides under the constraint itself). The rows are decoded as one batch. Returns the
    sequences, padded.
    """

    def run_rows(model: Any, input_ids: torch.LongTensor, logits_processor: Any = None, stopping_criteria: Any = None,
                 generation_config: Any = None, **model_kwargs: Any) -> torch.LongTensor:
        cfg = generation_config
        decoder = Decoder(model, tokenizer)
        returned = cfg.num_return_sequences or 1
        expand = max(cfg.num_beams or 1, returned)  # transformers repeats each prompt this many times
        search = _hf_search(cfg)
        mask = model_kwargs.get("attention_mask")
        rows = input_ids.tolist()
        prompts = [row if mask is None else [t for t, keep in zip(row, mask[i].tolist()) if keep] for i, row in enumerate(rows)]
        if search is not None:
            rows, prompts = rows[::expand], prompts[::expand]
            results = decoder.generate_batch(prompts, constraint=constraint, max_new_tokens=cfg.max_new_tokens,
                                             search=search, **options)
            hypotheses = [r.search.hypotheses if r.search is not None else [r] for r in results]
            out = [row + hyp[min(j, len(hyp) - 1)].token_ids for row, hyp in zip(rows, hypotheses) for j in range(returned)]
        else:
            sampling = {} if options.get("sampler") is not None else {
                "greedy": not cfg.do_sample,
                "temperature": cfg.temperature or 1.0,
                "top_k": cfg.top_k or 0,
                "top_p": cfg.top_p if cfg.top_p is not None else 1.0,
                "min_p": cfg.min_p or 0.0,
            }
            results = decoder.generate_batch(prompts, constraint=constraint, max_new_tokens=cfg.max_new_tokens,
                                             **sampling, **options)
            out = [row + r.token_ids for row, r in zip(rows, results)]
        pad = cfg.pad_token_id if cfg.pad_token_id is not None else min(decoder.eos)
        width = max(len(r) for r in out)
        return torch.tensor([r + [pad] * (width - len(r)) for r in out])

    return run_rows


def _hf_search(cfg: Any) -> StrategyFactory | None:
    """The search a transformers generation config asks for with its 4.x argument names (None: sampling)."""
    from .search import BeamSearch, ContrastiveSearch, DiverseBeamSearch

    beams, groups = cfg.num_beams or 1, getattr(cfg, "num_beam_groups", None) or 1
    alpha = getattr(cfg, "penalty_alpha", None)
    if beams > 1 and cfg.do_sample:
        raise CtrldecError(f"num_beams={beams} with do_sample=True (beam sampling) is not supported: "
                           "use do_sample=False for beam search, or num_beams=1 to sample")
    if beams > 1:
        lp = cfg.length_penalty if cfg.length_penalty is not None else 1.0
        stop = cfg.early_stopping if cfg.early_stopping is not None else False
        if groups > 1:
            return DiverseBeamSearch(beams, groups, cfg.diversity_penalty or 0.0, lp, stop)
        return BeamSearch(beams, lp, stop)
    if alpha and not cfg.do_sample and (cfg.top_k or 0) > 1:
        return ContrastiveSearch(alpha, cfg.top_k)
    return None
