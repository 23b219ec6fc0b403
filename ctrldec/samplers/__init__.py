"""Samplers: which token comes next under a constraint (the ``TokenSampler`` protocol).

``Greedy`` and ``Multinomial`` test candidates with ``Matcher.accepts`` and compute a full mask
only as a fallback; ``FullMask`` samples from the whole constrained distribution, after
controllers, as ``model.generate`` does; ``ASApStep`` reweights it by an ``ASApOracle``'s estimates.
"""

from .asap import ASApOracle, ASApStep, OracleKey
from .awrs import AWRS
from .base import Choice, SamplingParams, TokenSampler
from .full_mask import FullMask
from .sampling import Greedy, Multinomial, choose

__all__ = ["ASApOracle", "ASApStep", "OracleKey", "AWRS", "Choice", "SamplingParams", "TokenSampler", "FullMask", "Greedy", "Multinomial", "choose"]
