"""ctrldec's own decoding loop: what a logits processor cannot do.

* **Fast-forward**: tokens the constraint fixes (``Matcher.forced_tokens``, canonically
  tokenized) are fed to the model in one forward pass instead of one pass each.
* **Mask-free constrained sampling**: candidates are tested with ``Matcher.accepts`` in Gumbel
  (or probability) order; a full mask only past ``max_checks`` tests (``samplers.sampling``).
* A KV cache that can be forked and cropped, batching of independent prompts, stop strings,
  streaming, and a result with per-token log-probabilities, kinds (sampled / forced), checks
  and timing.

>>> import ctrldec                                                          # doctest: +SKIP
>>> model, tok = ctrldec.models.load()                                      # doctest: +SKIP
>>> out = ctrldec.generate(model, tok, "A cat as JSON:", constraint=ctrldec.JSONSchema(schema),
...                        greedy=True)                                     # doctest: +SKIP
>>> out.text, out.finish_reason, out.kinds.count("forced")                  # doctest: +SKIP
"""

from __future__ import annotations

import codecs
import copy
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .constraints.grammar import Constraint, tokenizer_info
from .errors import CtrldecError, DeadEndError
from .samplers.control import Mirostat, StepStats, choose_controlled
from .samplers.sampling import Choice, SamplingParams, choose

__all__ = ["Decoder", "GenerationResult", "generate", "custom_generate", "fork_cache", "crop_cache"]


@dataclass
class GenerationResult:
    """What one generation produced.

    ``finish_reason``: ``"eos"`` (the model or the constraint ended it), ``"stop"`` (a stop
    string), ``"length"`` (``max_new_tokens``). ``truncated``: the length ran out before the
    constraint could be satisfied (``text`` is then a valid prefix, not a complete output).
    ``logprobs[i]``: log-probability of token i under the model's unwarped distribution.
    """

    text: str
    token_ids: list[int]
    logprobs: list[float]
    kinds: list[str]  # "sampled" or "forced", per token
    checks: list[int]  # Matcher.accepts calls per sampled token
    finish_reason: str
    truncated: bool
    timing: dict[str, float] = field(default_factory=dict)
    steps: list[StepStats] = field(default_factory=list)  # per token, with controllers or diagnostics=True

    @property
    def forced_share(self) -> float:
        return self.kinds.count("forced") / len(self.kinds) if self.kinds else 0.0


def fork_cache(cache: Any) -> Any:
    """An independent copy of a KV cache (for beams and particles)."""
    return copy.deepcopy(cache)


def crop_cache(cache: Any, length: int) -> Any:
    """Drop cached positions past ``length`` (for rejected drafts)."""
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)  # transformers 5 counts from the end
    return cache


class Decoder:
    """The decoding loop for one model and tokenizer (see the module docstring)."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.width = int(model.get_output_embeddings().weight.shape[0])
        self.info = tokenizer_info(tokenizer, self.width if self.width != len(tokenizer) else None)
        eos = model.generation_config.eos_token_id if model.generation_config.eos_token_id is not None else tokenizer.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos]) | set(self.info.eos_token_ids)
        import inspect

        params = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    # -- prompts ------------------------------------------------------------------------------------

    def encode_prompt(self, prompt: str | Sequence[int] | list[dict], *, chat: bool = True, system: str | None = None) -> list[int]:
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

    # -- the loop -------------------------------------------------------------------------------------

    def _forward(self, ids: list[int], cache: Any, keep: int = 1) -> tuple[torch.Tensor, Any]:
        """Run ``ids`` through the model; logits for the last ``keep`` positions only (projecting
        every prompt position onto the vocabulary is most of a long prefill's cost)."""
        with torch.no_grad():
            out = self.model(input_ids=torch.tensor([ids]), **{self._cache_arg: cache}, use_cache=True, logits_to_keep=keep)
        return out.logits[0].float(), getattr(out, "cache", None) or out.past_key_values

    def stream(
        self,
        prompt: str | Sequence[int] | list[dict],
        *,
        constraint: Constraint | None = None,
        max_new_tokens: int = 256,
        greedy: bool = False,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        min_p: float = 0.0,
        seed: int | None = None,
        stop: Sequence[str] = (),
        fast_forward: bool = True,
        lookahead: int = 8,
        max_checks: int = 64,
        chat: bool = True,
        system: str | None = None,
        controllers: Sequence[Any] = (),
        diagnostics: bool = False,
    ) -> Iterator[str]:
        """Yield the output text as it is produced; the generator's return value (``StopIteration.value``,
        or ``Decoder.last_result``) is the ``GenerationResult``.

        ``lookahead``: up to this many tokens drafted by prompt lookup (what followed the output's
        latest stretch of text where it appeared earlier in the prompt or output, whitespace
        ignored, cut to what the constraint allows) are fed with each sampled token and checked
        in the same forward pass by sample-and-compare: each position's token is drawn as usual
        (under the constraint) and the draft is kept while they agree, so the output
        distribution is exactly that of one-token-at-a-time decoding (0 turns it off).

        ``controllers``: ``Mirostat`` and/or ``EntropyTemperature`` (samplers.control), applied in
        order to the constrained distribution, before temperature, top-k, top-p, min-p (the order
        ``model.generate`` applies ``logits_processor=[grammar, *controllers]`` in; with the same
        seed the draws are the same, with ``lookahead=0``). They need the whole distribution, so
        sampled steps compute the full mask. Each sequence has its own controller state (Mirostat's
        ``mu``); forced tokens leave it unchanged. ``diagnostics=True`` (implied by controllers)
        fills ``GenerationResult.steps``: entropy, surprise, probability, ``mu`` per token.
        """
        if max_new_tokens < 1:
            raise CtrldecError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        params = SamplingParams(greedy=greedy, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
        controllers = list(controllers)
        for c in controllers:
            if not all(hasattr(c, a) for a in ("init", "warp", "update")):
                raise CtrldecError(f"{c!r} is not a controller (it needs init, warp and update: Mirostat, EntropyTemperature)")
        states = [c.init() for c in controllers]
        record = diagnostics or bool(controllers)
        steps: list[StepStats] = []
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        matcher = constraint.compile(self.info).matcher() if constraint is not None else None
        prompt_ids = self.encode_prompt(prompt, chat=chat, system=system)
        lookup = _Lookup(self.info, prompt_ids)
        pending: tuple[Choice, StepStats | None] | None = None  # a token drawn while checking a draft
        draft_len = lookahead  # adapted: doubled after a fully kept draft, cut to what was kept otherwise
        drafted = accepted = 0
        token_bytes = self.info.token_bytes
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        ids: list[int] = []
        logprobs: list[float] = []
        kinds: list[str] = []
        checks: list[int] = []
        text = ""
        passes = 0
        started = time.perf_counter()
        logits, cache = self._forward(prompt_ids, None)
        passes += 1
        last = logits[-1]
        prefill = time.perf_counter() - started
        finish = "length"

        def pick(row: torch.Tensor) -> tuple[Choice, StepStats | None]:
            if not record:
                return choose(row, matcher, params, generator, max_checks=max_checks, width=self.info.vocab_size), None
            token, stats = choose_controlled(row, matcher, params, generator, controllers, states, width=self.info.vocab_size)
            return Choice(token, 0, matcher is not None), stats

        def emit(new: list[int], kind: str, rows: torch.Tensor, stats: list[StepStats | None] = ()) -> str:
            nonlocal text
            x = rows.numpy().astype(np.float64)
            top = x.max(axis=-1, keepdims=True)
            norm = (top + np.log(np.exp(x - top).sum(axis=-1, keepdims=True)))[:, 0]
            for j, t in enumerate(new):
                ids.append(t)
                logprobs.append(float(x[j, t] - norm[j]) if t < x.shape[-1] else float("-inf"))
                kinds.append(kind)
                if record:
                    if kind == "forced":
                        mu = next((st.mu for c, st in zip(controllers, states) if isinstance(c, Mirostat)), None)
                        steps.append(StepStats(entropy=0.0, surprise=0.0, prob=1.0, mu=mu, kept=1, forced=True))
                    else:
                        steps.append(stats[j])
            data = b"".join(token_bytes[t] for t in new if t < len(token_bytes))
            lookup.extend(data)
            delta = decoder.decode(data)
            text += delta
            return delta

        while len(ids) < max_new_tokens:
            if matcher is not None and matcher.is_done() and pending is None:
                finish = "eos"
                break
            forced = matcher.forced_tokens()[: max_new_tokens - len(ids)] if matcher is not None and fast_forward and pending is None else []
            if forced:
                for t in forced:
                    matcher.advance(t)  # type: ignore[union-attr]
                if len(ids) + len(forced) >= max_new_tokens or matcher.is_done():  # type: ignore[union-attr]
                    rows = torch.cat([last[None], self._forward(forced[:-1], cache, len(forced) - 1)[0]]) if len(forced) > 1 else last[None]
                    delta = emit(forced, "forced", rows)
                    if delta:
                        yield delta
                    continue
                out, cache = self._forward(forced, cache, len(forced))
                passes += 1
                rows = torch.cat([last[None], out[:-1]])
                last = out[-1]
                delta = emit(forced, "forced", rows)
                if delta:
                    yield delta
                continue
            choice, stats = pending if pending is not None else pick(last)
            pending = None
            token = choice.token
            checks.append(choice.checks)
            if token in self.eos:
                finish = "eos"
                break
            if matcher is not None:
                if not matcher.accepts(token):
                    matcher.check_not_dead()
                    raise DeadEndError("no token is allowed and the output may not end")  # pragma: no cover
                matcher.advance(token)
            delta = emit([token], "sampled", last[None], [stats])
            room = max_new_tokens - len(ids)
            draft = lookup.draft(matcher, ids, min(draft_len, room - 1)) if lookahead and room > 1 else []
            if room > 0 and not self._stopped(text, stop) and not (matcher is not None and matcher.is_done()):
                # Feed the token with the draft (if any) in one pass; keep drawing from the draft's
                # rows while the draws agree with it (sample-and-compare). The first draw that
                # disagrees is the next token, already drawn from the right distribution.
                out, cache = self._forward([token, *draft], cache, len(draft) + 1)
                passes += 1
                last = out[0]
                if draft:
                    kept = 0
                    picked: list[StepStats | None] = []
                    while True:
                        choice, stats = pick(out[kept])
                        if kept < len(draft) and choice.token == draft[kept] and choice.token not in self.eos:
                            checks.append(choice.checks)
                            if matcher is not None:
                                matcher.advance(choice.token)
                            picked.append(stats)
                            kept += 1
                            continue
                        break
                    crop_cache(cache, len(prompt_ids) + len(ids) + kept)
                    drafted += len(draft)
                    accepted += kept
                    draft_len = min(lookahead, draft_len * 2) if kept == len(draft) else max(2, kept + 1)
                    delta += emit(draft[:kept], "sampled", out[:kept], picked)
                    last = out[kept]
                    pending = (choice, stats) if len(ids) < max_new_tokens else None
            if delta:
                yield delta
            if self._stopped(text, stop):
                text = text[: min(text.index(s) for s in stop if s in text)]
                finish = "stop"
                break
        tail = decoder.decode(b"", final=True)
        if tail and finish != "stop":
            text += tail
            yield tail
        elapsed = time.perf_counter() - started
        truncated = matcher is not None and finish == "length" and not matcher.is_accepting()
        result = GenerationResult(
            text=text,
            token_ids=ids,
            logprobs=logprobs,
            kinds=kinds,
            checks=checks,
            finish_reason=finish,
            truncated=truncated,
            timing={
                "prefill_s": prefill,
                "decode_s": elapsed - prefill,
                "total_s": elapsed,
                "forward_passes": passes,
                "tokens_per_s": len(ids) / (elapsed - prefill) if elapsed > prefill and ids else 0.0,
                "drafted": drafted,
                "draft_accepted": accepted,
            },
            steps=steps,
        )
        self.last_result = result
        return result

    @staticmethod
    def _stopped(text: str, stop: Sequence[str]) -> bool:
        return bool(stop) and any(s in text for s in stop)

    def generate(self, prompt: str | Sequence[int] | list[dict], **kwargs: Any) -> GenerationResult:
        """Generate for one prompt; the keyword arguments are those of ``stream``."""
        it = self.stream(prompt, **kwargs)
        while True:
            try:
                next(it)
            except StopIteration as done:
                return done.value

    def generate_batch(self, prompts: Sequence[str | Sequence[int] | list[dict]], **kwargs: Any) -> list[GenerationResult]:
        """Independent prompts, one result each (each keeps its own matcher, cache and seed).

        The rows are decoded one after the other: on a CPU a batched forward pass costs about as
        much per row, and each row keeps fast-forward (a batch would have to feed its forced
        tokens one step at a time).
        """
        seed = kwargs.pop("seed", None)
        return [self.generate(p, seed=None if seed is None else seed + i, **kwargs) for i, p in enumerate(prompts)]


class _Lookup:
    """Prompt lookup decoding on text: find the longest recent stretch of the output (24, 12 or
    6 bytes, whitespace ignored) earlier in the prompt or the output, and draft what followed it.

    Matching ignores whitespace, so a compact JSON output still finds the pretty-printed schema
    it copies from; under a constraint the drafted bytes are cut to the longest prefix the
    grammar allows (skipping whitespace it rejects), then tokenized canonically after the
    output's last tokens. Drafts cost nothing to make (~0.1-1 ms) and are checked by the model.
    """

    _WS = frozenset(b" \t\n\r")
    _MAX_BYTES = 64

    def __init__(self, info: Any, prompt_ids: list[int]) -> None:
        self.info = info
        self._text = bytearray()
        self._norm = bytearray()  # the text without whitespace
        self._where: list[int] = []  # position in _text of each byte of _norm
        self.extend(info.decode_bytes(prompt_ids))

    def extend(self, data: bytes) -> None:
        base = len(self._text)
        self._text += data
        for i, b in enumerate(data):
            if b not in self._WS:
                self._norm.append(b)
                self._where.append(base + i)

    def draft(self, matcher: Any, ids: list[int], k: int) -> list[int]:
        if k <= 0:
            return []
        norm = self._norm
        for n in (24, 12, 6):
            if len(norm) <= n:
                continue
            pos = norm.rfind(norm[-n:], 0, len(norm) - 1)  # an earlier occurrence
            if pos < 0:
                continue
            start = self._where[pos + n - 1] + 1
            data = bytes(self._text[start : start + self._MAX_BYTES])
            if matcher is not None:
                data = matcher.viable_prefix(data, skip=self._WS)
            tokens = self.info.encode_after(ids, data) if data else None
            # The last token may be cut short by the byte limit or by the grammar: leave it out.
            return tokens[:-1][:k] if tokens else []
        return []


def generate(model: Any, tokenizer: Any, prompt: str | Sequence[int] | list[dict], **kwargs: Any) -> GenerationResult:
    """One-call form of ``Decoder(model, tokenizer).generate(prompt, **kwargs)``."""
    return Decoder(model, tokenizer).generate(prompt, **kwargs)


def custom_generate(constraint: Constraint | None = None, *, tokenizer: Any, **options: Any):
    """ctrldec's loop as a ``custom_generate=`` callable for ``model.generate``.

    >>> run = ctrldec.custom_generate(ctrldec.Regex("yes|no"), tokenizer=tok)          # doctest: +SKIP
    >>> out = model.generate(ids, custom_generate=run, max_new_tokens=5, do_sample=False)  # doctest: +SKIP

    ``max_new_tokens``, ``do_sample``, ``temperature``, ``top_k``, ``top_p`` and ``min_p`` come
    from the generation config; other logits processors passed to ``model.generate`` are not
    applied (the loop samples under the constraint itself). Returns the sequences, padded.
    """

    def run(model: Any, input_ids: torch.LongTensor, logits_processor: Any = None, stopping_criteria: Any = None,
            generation_config: Any = None, **model_kwargs: Any) -> torch.LongTensor:
        cfg = generation_config
        decoder = Decoder(model, tokenizer)
        sampling = {
            "greedy": not cfg.do_sample,
            "temperature": cfg.temperature or 1.0,
            "top_k": cfg.top_k or 0,
            "top_p": cfg.top_p if cfg.top_p is not None else 1.0,
            "min_p": cfg.min_p or 0.0,
        }
        mask = model_kwargs.get("attention_mask")
        rows = []
        for i, row in enumerate(input_ids.tolist()):
            prompt = row if mask is None else [t for t, keep in zip(row, mask[i].tolist()) if keep]
            result = decoder.generate(prompt, constraint=constraint, max_new_tokens=cfg.max_new_tokens, **sampling, **options)
            rows.append(row + result.token_ids)
        pad = cfg.pad_token_id if cfg.pad_token_id is not None else next(iter(decoder.eos))
        width = max(len(r) for r in rows)
        return torch.tensor([r + [pad] * (width - len(r)) for r in rows])

    return run
