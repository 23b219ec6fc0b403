"""The verifier: which drafted tokens to keep, exactly.

Sample-and-compare (for deterministic drafters): at each drafted position the sampler draws the
token it would draw without the draft (same distribution, same random stream, under the
constraint), and the draft is kept while the draws agree. The first draw that differs is itself
a correct draw of the next token, so it is committed too: a wrong draft costs the extra width of
one pass, never an extra pass. Greedy decoding keeps the draft while it is the argmax. The
output distribution is exactly that of one-token-at-a-time decoding (tests check it).
"""

from __future__ import annotations

import torch

from ..decoding.sequence import Sequence
from ..errors import CtrldecError
from ..samplers.base import TokenSampler
from .drafters import Draft

__all__ = ["Verifier"]


class Verifier:
    """Sample-and-compare over a draft; see the module docstring."""

    def verify(self, seq: Sequence, rows: torch.Tensor, draft: Draft, sampler: TokenSampler) -> int:
        """Commit the kept draft tokens and the token drawn after them; return how many were kept.

        ``rows[i]`` is the distribution after the draft's first ``i`` tokens (``len(draft) + 1`` rows).
        """
        if draft.q is not None:
            raise CtrldecError("a draft with a proposal distribution needs the rejection rule of speculative "
                               "sampling, which this verifier does not implement: give a deterministic drafter")
        for i, token in enumerate(draft.tokens):
            choice = sampler.choose(rows[i], seq.matcher, seq.rng, seq.state)
            seq.commit(choice, rows[i])
            kept = choice.token == token and choice.token not in seq.eos
            if not kept or seq.finished:
                return i + kept
        n = len(draft.tokens)
        seq.commit(sampler.choose(rows[n], seq.matcher, seq.rng, seq.state), rows[n])
        return n
