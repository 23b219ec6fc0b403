"""``Speculative``: which drafters guess ahead, verified exactly by one verifier.

>>> spec = ctrldec.Speculative(["forced", "prompt_lookup", "recycling"], max_draft=8)     # doctest: +SKIP
>>> out = ctrldec.generate(model, tok, prompt, constraint=schema, greedy=True, speculative=spec)  # doctest: +SKIP
>>> out.timing["draft_accepted/recycling"] / out.timing["verified/recycling"]             # doctest: +SKIP

Each step the drafters are asked in the order given; ``forced`` text is committed outright, and
the first other drafter with a draft is verified in that step's forward pass. Drafter names:

* ``forced``: the tokens the constraint fixes (fast-forward);
* ``prompt_lookup``: text copied from where the output's latest stretch appeared before;
* ``recycling``: Token Recycling, a draft tree from the model's own past top-k predictions;
* ``early_exit``: the target's first ``early_exit_layers`` layers and its head (``ModelDrafter``);
* ``model``: ``draft_model``, any causal LM with the target's tokenizer (``ModelDrafter``).

A ``Drafter`` instance may stand in the list too.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from typing import Any

from ..errors import CtrldecError
from .adaptive import DraftSizer
from .drafters import Drafter, ForcedText, PromptLookup
from .model import ModelDrafter, early_exit_model
from .recycling import TokenRecycling

__all__ = ["Speculative", "DRAFTERS", "check_same_tokenizer"]

DRAFTERS = ("forced", "prompt_lookup", "recycling", "early_exit", "model")
EARLY_EXIT_LAYERS = 0.125  # of the model's layers when not given: the fastest depth of `ctrldec bench early-exit` (README)


class Speculative:
    """Drafters and draft length for ``ctrldec.generate(..., speculative=Speculative(...))``.

    ``drafters``: names (``DRAFTERS``) or ``Drafter`` instances, asked in order. ``max_draft``
    (γ): the longest chain a drafter proposes. ``adaptive``: each draft is cut to the size with
    the most expected tokens per second, from online acceptance per drafter and position and
    the measured cost of a pass per width (``DraftSizer``), and drafters shorten their own drafts
    when rejections become likely (prompt lookup after a rejection, model drafters on their
    acceptance estimate); False: drafts are scored whole, ``max_draft`` long. ``draft_model`` (and optionally
    ``draft_tokenizer``, checked against the target's): the ``model`` drafter's model.
    ``early_exit_layers``: the ``early_exit`` drafter's depth (default: an eighth of the layers).

    Seeds: sample-and-compare draws one number per emitted token whatever the drafts, so seeded
    runs repeat exactly. Speculative sampling (model drafters when sampling) draws per drafted
    token, and with ``adaptive`` the draft size follows measured pass times, so a seeded run with
    ``early_exit`` or ``model`` may differ from run to run (in its tokens, not in its
    distribution); ``adaptive=False`` makes it repeat.
    """

    def __init__(self, drafters: Seq[str | Drafter] = ("forced", "prompt_lookup"), *, max_draft: int = 8,
                 adaptive: bool = True, draft_model: Any = None, draft_tokenizer: Any = None,
                 early_exit_layers: int | None = None) -> None:
        if max_draft < 1:
            raise CtrldecError(f"max_draft (γ) must be at least 1, got {max_draft}")
        for d in drafters:
            if isinstance(d, str) and d not in DRAFTERS:
                raise CtrldecError(f"no drafter named {d!r}; the drafters are: {', '.join(DRAFTERS)}")
            if not isinstance(d, (str, Drafter)):
                raise CtrldecError(f"drafters take names ({', '.join(DRAFTERS)}) or Drafter instances, got {d!r}")
        if "model" in drafters and draft_model is None:
            raise CtrldecError("the 'model' drafter needs draft_model=: a causal LM with the target's tokenizer")
        if draft_model is not None and "model" not in drafters:
            raise CtrldecError("draft_model= is given but 'model' is not among the drafters")
        self.drafters = list(drafters)
        self.max_draft = max_draft
        self.adaptive = adaptive
        self.draft_model = draft_model
        self.draft_tokenizer = draft_tokenizer
        self.early_exit_layers = early_exit_layers
        self._shared: dict[str, Any] = {}  # drafters that learn across calls (recycling), models built once
        self.sizer = DraftSizer() if adaptive else None  # learns across calls too

    @property
    def speculates(self) -> bool:
        """Whether any drafter guesses (is not forced text, which is certain)."""
        return any(d != "forced" and not isinstance(d, ForcedText) for d in self.drafters)

    def __repr__(self) -> str:
        names = [d if isinstance(d, str) else d.name for d in self.drafters]
        return f"Speculative({names}, max_draft={self.max_draft}, adaptive={self.adaptive})"

    def build(self, model: Any, tokenizer: Any, width: int, temperature: float | None) -> list[Drafter]:
        """The drafters for one call on ``model``; ``temperature``: None when the target is greedy
        (model drafters then draft greedily), else the target's temperature (they sample at it)."""
        out: list[Drafter] = []
        for d in self.drafters:
            if not isinstance(d, str):
                out.append(d)
            elif d == "forced":
                out.append(ForcedText())
            elif d == "prompt_lookup":
                out.append(PromptLookup(self.max_draft, adaptive=self.adaptive))
            elif d == "recycling":
                out.append(self._shared.setdefault(f"recycling/{id(model)}", TokenRecycling()))
            else:
                out.append(self._model_drafter(d, model, tokenizer, width).at(temperature))
        return out

    def _model_drafter(self, name: str, model: Any, tokenizer: Any, width: int) -> ModelDrafter:
        key = f"{name}/{id(model)}"
        if key not in self._shared:
            if name == "early_exit":
                layers = self.early_exit_layers or max(1, round(EARLY_EXIT_LAYERS * model.config.num_hidden_layers))
                draft = early_exit_model(model, layers)
            else:
                draft = self.draft_model
                check_same_tokenizer(draft, self.draft_tokenizer, tokenizer, width)
            self._shared[key] = ModelDrafter(draft, max_draft=self.max_draft, adaptive=self.adaptive, name=name)
        return self._shared[key]


def check_same_tokenizer(draft: Any, draft_tokenizer: Any, tokenizer: Any, width: int, role: str = "the draft model") -> None:
    """A second model (``role``) must speak the target's tokens: same vocabulary (when its
    tokenizer is given) and an output layer covering the tokenizer."""
    if draft_tokenizer is not None and draft_tokenizer.get_vocab() != tokenizer.get_vocab():
        theirs, ours = draft_tokenizer.get_vocab(), tokenizer.get_vocab()
        diff = sorted(set(theirs.items()) ^ set(ours.items()))[:1]
        where = f": e.g. {diff[0][0]!r} is {ours.get(diff[0][0])} for the target and {theirs.get(diff[0][0])} for {role}" if diff else ""
        raise CtrldecError(f"{role}'s tokenizer differs from the target's ({len(theirs)} vs {len(ours)} tokens{where}); "
                           "both models must share one tokenizer")
    draft_width = int(draft.get_output_embeddings().weight.shape[0])
    if draft_width < len(tokenizer):
        raise CtrldecError(f"{role} scores {draft_width} tokens but the target's tokenizer has {len(tokenizer)}: "
                           "it cannot share the target's tokenizer")
