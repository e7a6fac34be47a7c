"""Model building blocks against independent references: DiT parts, attention, pixel shuffle, depth, configs."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from megohand.models.config import DiTConfig, PolicyConfig
from megohand.models.depth import DepthHead, SmallCNN, depth_supervision_loss
from megohand.models.dit import ActionHead, AdaLayerNorm, Attention, DiT, action_sinusoid, timestep_sinusoid

torch.set_num_threads(1)
TINY_DIT = DiTConfig(width=32, num_layers=4, num_heads=4, dropout=0.0, output_dim=24, head_hidden=16)


def test_timestep_sinusoid_matches_diffusers_formula():
    t = torch.tensor([0, 1, 17, 999])
    dim = 16
    half = dim // 2
    freqs = np.exp(-math.log(10000) * np.arange(half) / (half - 1))  # downscale_freq_shift = 1
    args = t.numpy()[:, None].astype(np.float64) * freqs[None]
    ref = np.concatenate([np.cos(args), np.sin(args)], axis=1)  # flip_sin_to_cos
    np.testing.assert_allclose(timestep_sinusoid(t, dim).numpy(), ref, atol=1e-4)


def test_action_sinusoid_matches_groot_formula():
    t = torch.tensor([[3, 250], [0, 1000]])
    dim = 8
    freqs = np.exp(-np.arange(4) * math.log(10000) / 4)
    args = t.numpy()[..., None].astype(np.float64) * freqs
    ref = np.concatenate([np.sin(args), np.cos(args)], axis=-1)
    np.testing.assert_allclose(action_sinusoid(t, dim).numpy(), ref, atol=1e-4)


def test_adaln_formula():
    torch.manual_seed(0)
    ln = AdaLayerNorm(6)
    x, temb = torch.randn(2, 3, 6), torch.randn(2, 6)
    scale, shift = (ln.linear(F.silu(temb))).chunk(2, dim=-1)
    mu, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
    ref = (x - mu) / torch.sqrt(var + 1e-5) * (1 + scale[:, None]) + shift[:, None]
    torch.testing.assert_close(ln(x, temb), ref, rtol=1e-5, atol=1e-5)


def test_attention_matches_naive_softmax_with_mask():
    torch.manual_seed(0)
    att = Attention(8, heads=2, kv_dim=6).double()
    x, ctx = torch.randn(2, 3, 8, dtype=torch.float64), torch.randn(2, 5, 6, dtype=torch.float64)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    out = att(x, att.project_kv(ctx), mask)
    q = (x @ att.to_q.weight.T).reshape(2, 3, 2, 4).transpose(1, 2)
    k = (ctx @ att.to_k.weight.T).reshape(2, 5, 2, 4).transpose(1, 2)
    v = (ctx @ att.to_v.weight.T).reshape(2, 5, 2, 4).transpose(1, 2)
    logits = q @ k.transpose(-1, -2) / 2.0
    logits = logits.masked_fill(~mask[:, None, None, :], -np.inf)
    ref = (logits.softmax(-1) @ v).transpose(1, 2).reshape(2, 3, 8) @ att.to_out.weight.T + att.to_out.bias
    torch.testing.assert_close(out, ref)


def test_dit_interleaves_cross_and_self_attention_and_is_permutation_free_of_context():
    torch.manual_seed(0)
    dit = DiT(TINY_DIT, context_dim=12).eval()
    assert [b.cross for b in dit.blocks] == [True, False, True, False]
    assert dit.blocks[0].attn.to_k.in_features == 12 and dit.blocks[1].attn.to_k.in_features == 32
    x, ctx, t = torch.randn(2, 5, 32), torch.randn(2, 7, 12), torch.tensor([0, 500])
    out = dit(x, t, ctx)
    assert out.shape == (2, 5, 24)
    # no positional embedding inside: permuting the context tokens changes nothing, changing them does
    torch.testing.assert_close(dit(x, t, ctx[:, torch.randperm(7)]), out, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(dit(x, t, ctx + 1), out)
    # time matters (AdaLN)
    assert not torch.allclose(dit(x, torch.tensor([1, 999]), ctx), out)
    # padded context tokens are ignored when masked
    mask = torch.tensor([[True] * 5 + [False] * 2] * 2)
    ctx2 = ctx.clone()
    ctx2[:, 5:] = 100.0
    torch.testing.assert_close(dit(x, t, ctx2, mask), dit(x, t, ctx, mask), rtol=1e-5, atol=1e-5)
    # cached K/V equals recomputing
    torch.testing.assert_close(dit(x, t, kv_cache=dit.context_kv(ctx)), out)


def test_action_head_shapes_gradients_and_no_future_leak():
    torch.manual_seed(0)
    head = ActionHead(TINY_DIT, state_dim=109, action_dim=99, horizon=6, context_dim=12)
    state_tok = head.state_encoder(torch.randn(2, 109))[:, None]
    x = torch.randn(2, 6, 99)
    v = head(state_tok, x, torch.tensor([3, 700]), torch.randn(2, 4, 12))
    assert v.shape == (2, 6, 99)
    v.square().mean().backward()
    no_grad = [n for n, p in head.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    # only rows of the positional table beyond the horizon stay untouched
    assert no_grad == ["pos_embed.weight"] or no_grad == []
    assert head.pos_embed.weight.grad[:6].abs().sum() > 0 and head.pos_embed.weight.grad[6:].abs().sum() == 0


def test_depth_supervision_loss_hand_computed():
    pred = torch.full((2, 1, 2, 2), 1.0)
    target = torch.tensor([[[[0.5, 3.0], [0.0, 1.0]]], [[[9.0, 9.0], [9.0, 9.0]]]])
    valid = torch.tensor([True, False])
    # sample 0: pixels 0.5 (err .25), 3 -> clipped 2 (err 1), 0 missing, 1 (err 0); sample 1 ignored
    assert depth_supervision_loss(pred, target, valid, 2.0).item() == pytest.approx(1.25 / 3)
    assert depth_supervision_loss(pred, target, torch.tensor([False, False]), 2.0).item() == 0.0


def test_small_cnn_and_depth_head_shapes():
    cnn = SmallCNN(1, 32, num_down=4)
    f = cnn(torch.randn(2, 1, 64, 64))
    assert f.shape == (2, 32, 4, 4)
    def block_sizes(head, feats):  # output grid of each conv block
        sizes = []
        hooks = [blk.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[-2:]))) for blk in head.up]
        out = head(feats)
        for h in hooks:
            h.remove()
        return out, sizes

    head = DepthHead(32, size=20)
    out, sizes = block_sizes(head, f)
    assert out.shape == (2, 1, 20, 20)
    assert sizes == [(8, 8), (16, 16), (32, 32)]  # 4 -> 8 -> 16 -> 32: doubled while below 20
    out.sum().backward()
    assert all(p.grad is not None for p in head.parameters())
    out, sizes = block_sizes(DepthHead(32, size=8), torch.randn(2, 32, 4, 4))
    assert out.shape == (2, 1, 8, 8)
    assert sizes == [(8, 8), (8, 8), (8, 8)]  # compact's case: stop doubling at the loss grid


def test_config_roundtrip_and_presets():
    for preset in (PolicyConfig.compact(), PolicyConfig.paper()):
        d = preset.to_dict()
        import json

        assert PolicyConfig.from_dict(json.loads(json.dumps(d))) == preset
    paper = PolicyConfig.paper()
    assert (paper.dit.width, paper.dit.num_layers, paper.dit.num_heads, paper.dit.output_dim) == (1536, 16, 32, 1024)
    assert paper.backbone.eagle.llm_layers == 12 and paper.backbone.kind == "eagle" and paper.depth.encoder == "resnet"
    assert paper.horizon == 16 and paper.flow.inference_steps == 4
    with pytest.raises(ValueError, match="unknown config keys"):
        PolicyConfig.from_dict({**paper.to_dict(), "bogus": 1})
    assert PolicyConfig(modalities="TI").uses_depth is False and PolicyConfig(modalities="T").uses_image is False
