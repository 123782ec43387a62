"""``torch.nn.MultiheadAttention``: inputs once, queries, keys and values once, attention weights twice."""

import copy
import dataclasses

import pytest
import torch

import iexact
from iexact.autograd import attention

from .bias import bias_statistic, one_copy_fails, threshold
from .examples import Example
from .forms import EIGHT_BITS, compare, compiles_as_eager, features

EXAMPLES = [
    Example(
        "MultiheadAttention", lambda channels: torch.nn.MultiheadAttention(channels, 3, batch_first=True), "sequence"
    ),
    Example(
        "MultiheadAttention dropout, no bias",
        lambda channels: torch.nn.MultiheadAttention(channels, 2, dropout=0.2, bias=False, batch_first=True),
        "sequence",
    ),
    Example(
        "MultiheadAttention learned and zero keys",
        lambda channels: torch.nn.MultiheadAttention(
            channels, 2, add_bias_kv=True, add_zero_attn=True, batch_first=True
        ),
        "sequence",
    ),
]
E, HEADS, B, L, S = 8, 2, 3, 6, 4


def _padding(length=L):
    mask = torch.zeros(B, length, dtype=torch.bool)
    mask[0, length - 2 :] = True  # GPSConv's padding of a smaller graph
    mask[2, 1] = True
    return mask


def _loss_of(result):
    """The output, and the weights after it when returned, as one tensor for ``compare``."""
    out, weights = result
    return out.flatten() if weights is None else torch.cat([out.flatten(), weights.flatten()])


class SelfAttention(torch.nn.Module):
    """``attention(x, x, x, **options)``'s output alone, as a module of ``x``."""

    def __init__(self, attention, **options):
        super().__init__()
        self.attention, self.options = attention, options

    def forward(self, x):
        return self.attention(x, x, x, **self.options)[0]


def _causal(module, x):
    """Self-attention with the causal hint (and its mask, which torch requires)."""
    causal = torch.ones(L, L, dtype=torch.bool).triu(1)
    return module(x, x, x, attn_mask=causal, is_causal=True, need_weights=False)


# each form: module options, and the call of a module on batch-first x, with ``seq`` laying out a
# batch-first tensor as the module takes it
FORMS = {
    "self-attention, GPSConv's call": (
        {"dropout": 0.3},
        lambda m, x, seq: m(seq(x), seq(x), seq(x), key_padding_mask=_padding(), need_weights=False),
    ),
    "weights averaged over heads": ({"dropout": 0.3}, lambda m, x, seq: m(seq(x), seq(x), seq(x))),
    "weights per head": ({}, lambda m, x, seq: m(seq(x), seq(x), seq(x), average_attn_weights=False)),
    "keys and values from another sequence": (
        {},
        lambda m, x, seq: m(seq(x), *(2 * [seq(features(B, S, E, seed=5))]), key_padding_mask=_padding(S)),
    ),
    "kdim and vdim": (
        {"kdim": 5, "vdim": 7},
        lambda m, x, seq: m(seq(x), seq(features(B, S, 5, seed=5)), seq(features(B, S, 7, seed=6))),
    ),
    "float attn_mask": ({}, lambda m, x, seq: m(seq(x), seq(x), seq(x), attn_mask=torch.randn(L, L))),
    "per-head attn_mask and padding": (
        {},
        lambda m, x, seq: m(
            seq(x), seq(x), seq(x), attn_mask=torch.rand(B * HEADS, L, L) < 0.3, key_padding_mask=_padding()
        ),
    ),
    "learned and zero keys, padding and weights": (
        {"add_bias_kv": True, "add_zero_attn": True, "dropout": 0.3},
        lambda m, x, seq: m(seq(x), seq(x), seq(x), key_padding_mask=_padding()),
    ),
    "learned keys, per-head attn_mask": (
        {"add_bias_kv": True},
        lambda m, x, seq: m(seq(x), seq(x), seq(x), attn_mask=torch.rand(B * HEADS, L, L) < 0.3),
    ),
    "zero keys, causal": ({"add_zero_attn": True}, lambda m, x, seq: _causal(m, seq(x))),
    "causal": ({}, lambda m, x, seq: _causal(m, seq(x))),
}


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("form", sorted(FORMS))
def test_input_forms(form, batch_first):
    options, call = FORMS[form]

    def seq(t):
        return t if batch_first else t.transpose(0, 1)

    def run(module, x):
        out, weights = call(module, x, seq)
        return _loss_of((seq(out), weights))

    compare(lambda: torch.nn.MultiheadAttention(E, HEADS, batch_first=batch_first, **options), run, [features(B, L, E)])


def test_unbatched_sequences():
    compare(
        lambda: torch.nn.MultiheadAttention(E, HEADS, dropout=0.2),
        lambda m, x: _loss_of(m(x, x, x, key_padding_mask=torch.tensor([False] * (L - 1) + [True]))),
        [features(L, E)],
    )


def test_a_mask_with_a_gradient_runs_the_stock_forward():
    compare(
        lambda: torch.nn.MultiheadAttention(E, HEADS, batch_first=True),
        lambda m, x: m(x, x, x, attn_mask=torch.randn(L, L, requires_grad=True))[0],
        [features(B, L, E)],
        warns="attn_mask requires a gradient",
    )


def test_an_integer_mask_gets_torchs_error():
    module = iexact.compress_(torch.nn.MultiheadAttention(E, HEADS, batch_first=True), EIGHT_BITS)
    x = torch.randn(B, L, E)
    with pytest.warns(UserWarning, match="neither bool nor floating"), pytest.raises(AssertionError, match="bool"):
        module(x, x, x, attn_mask=torch.zeros(L, L, dtype=torch.int64))


def test_learned_keys_get_their_gradient_through_the_compressed_attention():
    module = iexact.compress_(torch.nn.MultiheadAttention(E, HEADS, add_bias_kv=True), iexact.CompressionConfig())
    x = torch.randn(L, B, E)
    out, weights = module(x, x, x)
    assert weights.shape == (B, L, L + 1)
    out.square().sum().backward()
    assert module.bias_k.grad is not None and module.bias_k.grad.norm() > 0 and module.bias_v.grad.norm() > 0


def test_eval_is_the_stock_forward_bit_for_bit():
    torch.manual_seed(0)
    module = torch.nn.MultiheadAttention(E, HEADS, dropout=0.3, batch_first=True)
    twin = iexact.compress_(copy.deepcopy(module), iexact.CompressionConfig()).eval()
    x = torch.randn(B, L, E)
    theirs, ours = (m(x, x, x, key_padding_mask=_padding()) for m in (module.eval(), twin))
    assert all(torch.equal(a, b) for a, b in zip(theirs, ours, strict=True))


class CrossAttention(torch.nn.Module):
    def __init__(self, attention):
        super().__init__()
        self.attention = attention

    def forward(self, x, memory):
        return self.attention(x, memory, memory)[0]


def test_keeps_codes_of_each_input_and_the_weights_twice():
    config = dataclasses.replace(EIGHT_BITS, reference_inputs=False)
    module = iexact.compress_(torch.nn.MultiheadAttention(E, HEADS, batch_first=True), config)
    x, memory = torch.randn(B, L, E), torch.randn(B, S, E)
    report = iexact.activation_memory(CrossAttention(module), x, memory)
    assert report.uncompressed == 0
    # 8-bit codes: the query input and the key/value input once each, queries, keys and values
    # once each, the weights (per batch element, head, query and key) twice, the heads' output once
    codes = [B * L * E, B * S * E, B * L * E, B * S * E, B * S * E, *(2 * [B * HEADS * L * S]), B * L * E]
    assert sorted(row.nbytes for row in report.saved if row.dtype == torch.uint8) == sorted(codes)
    assert not [row for row in report.saved if row.dtype == torch.float32 and row.nbytes > 64]


def test_compiles_without_a_graph_break():
    attention = torch.nn.MultiheadAttention(E, HEADS, dropout=0.2, batch_first=True)
    module = iexact.compress_(SelfAttention(attention, key_padding_mask=_padding(), need_weights=False), EIGHT_BITS)
    compiles_as_eager(module, torch.randn(B, L, E))


@pytest.mark.slow
def test_the_query_map_gradient_is_biased_with_one_copy_of_the_weights(monkeypatch):
    """The logits' gradient multiplies the attention weights by a sum holding them (the weights at
    2 bits, as GATv2Conv's check has them: at 4, one copy's bias is below what 1,024 draws resolve)."""
    monkeypatch.setattr(iexact.config, "ATTENTION_WEIGHT_BITS", 2)
    torch.manual_seed(0)
    x = 2 * torch.randn(40, 5, E)
    module = torch.nn.MultiheadAttention(E, HEADS, batch_first=True)
    one_copy_fails(monkeypatch, module, attention, lambda m: m(x, x, x, need_weights=False)[0], "in_proj_weight")


def test_long_sequences_keep_exact_queries_and_keys_in_place_of_the_weights():
    """Two compressed copies of (B, H, L, L) weights outweigh exact queries and keys once L is
    long (the whole graph as one sequence): backward then recomputes the weights."""
    config = dataclasses.replace(EIGHT_BITS, reference_inputs=False)
    module = iexact.compress_(SelfAttention(torch.nn.MultiheadAttention(E, HEADS, batch_first=True)), config)
    x = torch.randn(2, 64, E)
    report = iexact.activation_memory(module, x)
    # 8-bit codes: the input, the values and the heads' output; the queries and keys exact, 4 bytes each
    assert sorted(row.nbytes for row in report.saved if row.dtype == torch.uint8) == 3 * [x.numel()]
    assert report.uncompressed == 2 * 4 * x.numel()
    short = iexact.activation_memory(module, torch.randn(2, 5, E))
    assert short.uncompressed == 0


def test_recomputed_weights_give_unbiased_gradients():
    torch.manual_seed(0)
    module = SelfAttention(torch.nn.MultiheadAttention(E, HEADS, dropout=0.2, batch_first=True))
    twin = copy.deepcopy(module)
    iexact.compress_(module, iexact.CompressionConfig(reference_inputs=False))
    x = torch.randn(3, 64, E).requires_grad_()
    grad = torch.randn(3, 64, E, generator=torch.Generator().manual_seed(1))

    def gradients(layer):
        x.grad = None
        layer.zero_grad()
        torch.manual_seed(3)  # the same dropout masks
        layer(x).backward(grad)
        return [x.grad.clone()] + [p.grad.clone() for p in layer.parameters()]

    exact = gradients(twin)
    draws = [gradients(module) for _ in range(1024)]  # as many seeds as GATConv's attention check
    for index, reference in enumerate(exact[:-1]):  # the output map's bias is exact
        statistic = bias_statistic(torch.stack([draw[index] for draw in draws]), reference)
        assert statistic < threshold(reference.numel()), (index, statistic)
    torch.testing.assert_close(draws[0][-1], exact[-1])


def test_a_hook_on_its_output_map_runs_the_stock_forward():
    """The handler computes ``out_proj`` itself: a hook on it must still fire, so the module's own forward runs."""

    def build():
        module = torch.nn.MultiheadAttention(E, HEADS, batch_first=True)
        module.out_proj.register_forward_hook(lambda module, args, out: out * 2)
        return module

    compare(
        build, lambda m, x: m(x, x, x)[0], [features(B, L, E)], warns="forward hooks are registered on its out_proj"
    )
