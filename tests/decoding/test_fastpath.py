"""The runner's fast path (``ctrldec/decoding/fastpath.py``): a KV buffer that grows in place and
grouped KV heads read in place under a mask. It must give transformers' own logits bit for bit
through every cache operation the loop uses, and leave the model as it found it."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ctrldec.decoding import KVCache, Runner
from ctrldec.decoding import fastpath
from ctrldec.decoding.llama import LlamaPass, llama_pass

transformers = pytest.importorskip("transformers")
from transformers.cache_utils import DynamicLayer  # noqa: E402


def _model(attn: str = "sdpa", seed: int = 0, **config_options):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    options = {"num_key_value_heads": 2, **config_options}
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         max_position_embeddings=1024, eos_token_id=0, pad_token_id=0, attn_implementation=attn, **options)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def model():
    return _model()


def _script(runner: Runner, seed: int) -> list[torch.Tensor]:
    """Every cache operation of the loop, in turn; the logits of each pass."""
    g = torch.Generator().manual_seed(seed)

    def ids(n: int) -> list[int]:
        return torch.randint(1, 64, (n,), generator=g).tolist()

    out: list[torch.Tensor] = []

    def step(kv: KVCache, feeds, parents=None) -> None:
        f = runner.forward(kv, feeds, [len(x) for x in feeds], parents=parents)
        out.extend(f.logits)

    kv = KVCache(2)
    step(kv, [ids(300), ids(7)])  # rows of different lengths: padding holes; the buffer grows past 256 columns
    step(kv, [ids(1), ids(1)])
    step(kv, [ids(4), ids(2)])  # a verification pass under a mask
    kv.crop(0, kv.length(0) - 3)  # a rejected draft
    step(kv, [ids(2), ids(1)])
    step(kv, [ids(5), ids(1)], parents=[[-1, 0, 0, 1, -1], None])  # a draft tree
    kv.forget(0, [-5, -3, -2])  # its rejected branches (the kept path 0 -> 1 -> 3 stays)
    step(kv, [ids(1), ids(3)])
    kv.place_rows([1, 1])  # a beam step: row 1 forks, row 0 leaves
    step(kv, [ids(1), ids(2)])
    kv.select_rows([1, 0, 0])  # SMC resampling: reordered and duplicated
    step(kv, [ids(2), ids(1), ids(1)])
    kv.compact()
    step(kv, [ids(1), ids(1), ids(1)])
    other = kv.fork()
    step(other, [ids(3), ids(1), ids(2)])
    step(kv, [ids(1), ids(1), ids(1)])  # the original is untouched by its fork
    alone = KVCache(1)
    step(alone, [ids(20)])
    step(alone, [ids(1)])  # a plain row: no mask, no position ids
    step(alone, [ids(6)])
    return out


def test_fast_path_gives_transformers_logits_bit_for_bit(model):
    fast, plain = _script(Runner(model), 1), _script(Runner(model, fast_path=False), 1)
    assert len(fast) == len(plain)
    for i, (a, b) in enumerate(zip(fast, plain)):
        assert torch.equal(a, b), f"pass output {i} differs by {(a - b).abs().max().item()}"


def _llama_calls(monkeypatch) -> list[bool]:
    """Records, per pass, whether ``LlamaPass`` ran it (True) or handed it to the model (False)."""
    calls: list[bool] = []
    original = LlamaPass.__call__

    def counted(self, *args, **kwargs):
        logits = original(self, *args, **kwargs)
        calls.append(logits is not None)
        return logits

    monkeypatch.setattr(LlamaPass, "__call__", counted)
    return calls


@pytest.mark.parametrize("variant", ["plain", "biases", "bfloat16", "no grouped heads"])
def test_the_llama_pass_gives_transformers_logits_bit_for_bit(variant, monkeypatch):
    options = {"biases": {"attention_bias": True, "mlp_bias": True}, "no grouped heads": {"num_key_value_heads": 4}}
    model = _model(seed=3, **options.get(variant, {}))
    if variant == "bfloat16":
        model = model.to(torch.bfloat16)
    calls = _llama_calls(monkeypatch)
    fast = _script(Runner(model), 2)
    assert len(calls) == 14 and all(calls)  # every pass of the script went through LlamaPass
    plain = _script(Runner(model, fast_path=False), 2)
    for i, (a, b) in enumerate(zip(fast, plain)):
        assert torch.equal(a, b), f"pass output {i} differs by {(a - b).abs().max().item()}"


def test_a_hook_or_a_patched_forward_sends_the_pass_through_the_model(model, monkeypatch):
    calls = _llama_calls(monkeypatch)

    def logits(fast: bool = True) -> torch.Tensor:
        return Runner(model, fast_path=fast).forward(KVCache(1), [[1, 2, 3]], [1]).logits[0]

    unsteered = logits()
    handle = model.model.layers[1].mlp.register_forward_hook(lambda module, args, out: out + 1.0)  # steering
    try:
        steered = logits()
        assert calls == [True, False] and torch.equal(steered, logits(fast=False))
    finally:
        handle.remove()
    assert not torch.equal(steered, unsteered)
    norm = model.model.layers[0].post_attention_layernorm
    monkeypatch.setattr(norm, "forward", lambda hidden: torch.zeros_like(hidden), raising=False)
    patched = logits()
    assert calls[-1] is False and torch.equal(patched, logits(fast=False)) and not torch.equal(patched, unsteered)
    monkeypatch.delattr(norm, "forward")
    assert torch.equal(logits(), unsteered) and calls[-1] is True
    act = type(model.model.layers[0].mlp.act_fn)  # a kernel swapped in for the activation's class
    monkeypatch.setattr(act, "forward", lambda self, x: torch.nn.functional.silu(x) * 2.0)
    swapped = logits()
    assert calls[-1] is True and torch.equal(swapped, logits(fast=False)) and not torch.equal(swapped, unsteered)


def test_the_llama_pass_reads_weights_as_they_are_now(monkeypatch):
    """Transposed weights are kept from pass to pass; a weight changed in place, replaced, or
    given new memory must be read anew, as the model reads it."""
    model = _model(seed=4)
    calls = _llama_calls(monkeypatch)
    runners = {True: Runner(model), False: Runner(model, fast_path=False)}  # one LlamaPass throughout

    def logits(fast: bool = True) -> torch.Tensor:
        return runners[fast].forward(KVCache(1), [[1, 2, 3, 4]], [2]).logits[0]

    before = logits()
    attn = model.model.layers[0].self_attn
    with torch.no_grad():
        attn.q_proj.weight.mul_(2.0)  # in place: same memory
        assert torch.equal(logits(), logits(fast=False)) and not torch.equal(logits(), before)
        attn.k_proj.weight = torch.nn.Parameter(attn.k_proj.weight * 0.5)  # a new Parameter
        assert torch.equal(logits(), logits(fast=False))
        attn.o_proj.weight.data = attn.o_proj.weight.data.t().contiguous()  # new memory, same Parameter
        assert torch.equal(logits(), logits(fast=False))
        attn.o_proj.weight.data = attn.o_proj.weight.data.t()  # same memory, other strides (a square weight)
        assert torch.equal(logits(), logits(fast=False))
    assert calls and all(calls)


def test_the_llama_pass_serves_only_transformers_own_llama():
    from transformers import LlamaForCausalLM

    class Custom(LlamaForCausalLM):
        pass

    assert llama_pass(_model()) is not None
    assert llama_pass(Custom(_model().config)) is None
    training = _model().train()
    assert llama_pass(training) is not None and llama_pass(training)._layers() is None  # checked per pass
    assert llama_pass(_model("eager"))._layers() is None


def test_fast_path_is_on_where_it_claims(model):
    kv = KVCache(1)
    seen = []
    hook = model.model.layers[0].self_attn.register_forward_pre_hook(
        lambda module, *_: seen.append(module.config._attn_implementation))
    try:
        Runner(model).forward(kv, [[1, 2, 3]], [1])
    finally:
        hook.remove()
    assert seen == [fastpath.ATTENTION]
    assert model.config._attn_implementation == "sdpa"  # undone after the pass
    assert all(isinstance(layer, fastpath.GrowingLayer) for layer in kv.cache.layers)
    plain = KVCache(1)
    Runner(model, fast_path=False).forward(plain, [[1, 2, 3]], [1])
    assert all(type(layer) is DynamicLayer for layer in plain.cache.layers)


def test_the_switch_is_undone_after_an_error_and_counts_nested_passes(model):
    configs = fastpath.attention_configs(model)
    assert configs == [model.config]
    with pytest.raises(RuntimeError):
        with fastpath.grouped_attention(configs):
            raise RuntimeError("a pass that fails")
    assert model.config._attn_implementation == "sdpa"
    with fastpath.grouped_attention(configs):
        with fastpath.grouped_attention(configs):
            pass
        assert model.config._attn_implementation == fastpath.ATTENTION  # the outer pass still runs
    assert model.config._attn_implementation == "sdpa"


def test_a_model_on_another_attention_is_left_alone():
    eager = _model("eager")
    kv = KVCache(1)
    seen = []
    hook = eager.model.layers[0].self_attn.register_forward_pre_hook(
        lambda module, *_: seen.append(module.config._attn_implementation))
    try:
        Runner(eager).forward(kv, [[1, 2, 3, 4]], [2])
    finally:
        hook.remove()
    assert seen == ["eager"] and eager.config._attn_implementation == "eager"


_ops = st.lists(st.one_of(
    st.tuples(st.just("update"), st.integers(1, 70)),
    st.tuples(st.just("crop"), st.integers(1, 40)),
    st.tuples(st.just("select"), st.lists(st.integers(0, 2), min_size=3, max_size=3)),
    st.tuples(st.just("fork"), st.just(0)),
), min_size=1, max_size=25)


@settings(max_examples=60, deadline=None)
@given(_ops, st.integers(0, 2**16))
def test_growing_layer_holds_what_a_dynamic_layer_holds(ops, seed):
    g = torch.Generator().manual_seed(seed)
    grow, plain = fastpath.GrowingLayer(), DynamicLayer()
    for op, arg in ops:
        if op == "update":
            k, v = torch.randn(3, 2, arg, 4, generator=g), torch.randn(3, 2, arg, 4, generator=g)
            a, b = grow.update(k, v), plain.update(k, v)
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        elif op == "crop" and plain.get_seq_length():
            grow.crop(-min(arg, plain.get_seq_length()))
            plain.crop(-min(arg, plain.get_seq_length()))
        elif op == "select" and plain.get_seq_length():
            grow.batch_select_indices(torch.tensor(arg))
            plain.batch_select_indices(torch.tensor(arg))
        elif op == "fork":
            kept = copy.deepcopy(grow)
            grow.update(torch.ones(3, 2, 1, 4), torch.ones(3, 2, 1, 4))  # the copy must not see this
            grow.crop(-1)
            grow = kept
        assert grow.get_seq_length() == plain.get_seq_length()
        if plain.get_seq_length():
            assert torch.equal(grow.keys, plain.keys) and torch.equal(grow.values, plain.values)
