"""Grounding supervision and modality dropout of MEgoHandPolicy (tiny compact model).

Oracles: the target distribution against a hand-computed Gaussian on a 4 x 4 grid; the loss of a head that puts
all its mass on the right cell is lower than the loss of one that puts it on another; dropout seen through what
reaches the text encoder; the grounding tokens' soft-argmax and depth against hand-computed cells and a depth ramp;
teacher forcing seen through the flow loss, which stops depending on the head's weights when every token is forced;
the grounded state token against the same weights without it (its zero start changes nothing).
"""

import math
from dataclasses import replace

import pytest
import torch

from megohand.models import MEgoHandPolicy
from megohand.models.config import GroundingConfig, ModalityDropoutConfig
from megohand.models.grounding import (GroundingState, GroundingTokens, expected_locations, gaussian_targets,
                                       grounding_features, grounding_loss, teacher_logits)

from test_models_fixtures import sample_batch
from test_models_policy import compact_cfg

torch.set_num_threads(1)


def test_gaussian_targets_hand_computed():
    t = gaussian_targets(torch.tensor([[[0.625, 0.125]]]), grid=4, sigma=1.0)[0, 0].view(4, 4)
    assert math.isclose(float(t.sum()), 1.0, rel_tol=1e-6)
    # cell centres at (i + 0.5) / 4: (0.625, 0.125) is the centre of row 0, column 2
    assert int(t.argmax()) == 2
    d2 = lambda r, c: ((c + 0.5) / 4 - 0.625) ** 2 + ((r + 0.5) / 4 - 0.125) ** 2  # noqa: E731
    w = torch.tensor([[math.exp(-d2(r, c) * 16 / 2) for c in range(4)] for r in range(4)])
    assert torch.allclose(t, w / w.sum(), atol=1e-6)


def test_grounding_loss_prefers_the_right_cell_and_ignores_invalid():
    uv = torch.tensor([[[0.1, 0.1], [0.9, 0.9]]])
    right = torch.full((1, 16, 2), -10.0)
    right[0, 0, 0] = right[0, 15, 1] = 10.0
    wrong = right.flip(1)
    assert grounding_loss(right, uv, torch.ones(1, 2, dtype=torch.bool), 0.5) < \
        grounding_loss(wrong, uv, torch.ones(1, 2, dtype=torch.bool), 0.5)
    assert float(grounding_loss(wrong, uv, torch.zeros(1, 2, dtype=torch.bool), 0.5)) == 0.0


def grounded_batch(B=2, L=4):
    b = sample_batch(L=L)
    b["ground_uv"] = torch.rand(B, 2, 2)
    b["ground_valid"] = torch.tensor([[True, False], [True, True]])
    return b


def test_grounding_head_trains_the_backbone():
    torch.manual_seed(0)
    p = MEgoHandPolicy(compact_cfg(grounding=GroundingConfig(weight=1.0))).train()
    loss, info = p(grounded_batch())
    assert "loss_ground" in info and torch.isfinite(info["loss_ground"])
    p.zero_grad()
    p.grounding_head(p.backbone.image_tokens(*_tokens(p))).sum().backward()
    assert p.backbone.vision.parameters().__next__().grad is not None  # the loss reaches the vision encoder
    # without the head (weight 0) nothing changes for old configs
    assert MEgoHandPolicy(compact_cfg()).grounding_head is None
    assert MEgoHandPolicy(compact_cfg(modalities="V", grounding=GroundingConfig(weight=1.0))).grounding_head is None


def _tokens(p):
    b = sample_batch()
    text = p.prepare_text(b["instruction"], 2)
    vl, *_ = p.encode_tokens(b["image"], text)
    return vl, text


def test_modality_dropout_reaches_the_encoders():
    torch.manual_seed(0)
    p = MEgoHandPolicy(compact_cfg(dropout=ModalityDropoutConfig(text=1.0, image=1.0))).train()
    seen = {}
    orig_text, orig_tokens = p.prepare_text, p.encode_tokens

    def spy_text(instr, B):
        seen["text"] = list(instr)
        return orig_text(instr, B)

    def spy_tokens(image, text, depth=None, has_depth=None, **kw):
        seen["image"], seen["has_depth"] = image.clone(), has_depth
        return orig_tokens(image, text, depth, has_depth, **kw)

    p.prepare_text, p.encode_tokens = spy_text, spy_tokens
    p(grounded_batch())
    assert seen["text"] == ["", ""] and int(seen["image"].abs().sum()) == 0 and not bool(seen["has_depth"].any())
    p.eval()
    b = grounded_batch()
    p(b)  # no dropout outside training
    assert seen["text"] == list(b["instruction"]) and torch.equal(seen["image"], b["image"])


def test_expected_locations_hand_computed():
    logits = torch.full((1, 16, 2), -30.0)
    logits[0, 6, 0] = 30.0  # row 1, column 2 -> centre (2.5 / 4, 1.5 / 4)
    logits[0, 0, 1] = logits[0, 15, 1] = 30.0  # half at (0.125, 0.125), half at (0.875, 0.875)
    uv, peak = expected_locations(logits)
    assert torch.allclose(uv, torch.tensor([[[0.625, 0.375], [0.5, 0.5]]]), atol=1e-6)
    assert torch.allclose(peak, torch.tensor([[1.0, 0.5]]), atol=1e-6)


def test_grounding_tokens_read_the_depth_at_the_location():
    tok = GroundingTokens(8, max_depth=2.0)
    logits = torch.full((1, 16, 2), -30.0)
    logits[0, 6, 0] = logits[0, 9, 1] = 30.0  # cells (row 1, col 2) and (row 2, col 1)
    ramp = torch.linspace(0, 1, 32).view(1, 1, 1, 32).expand(1, 1, 32, 32) * 1.5  # depth grows to the right [m]
    feats = {}
    tok.mlp[0].register_forward_pre_hook(lambda m, i: feats.update(x=i[0]) or None)
    tok(logits, ramp, torch.tensor([True]))
    x = feats["x"][0]  # (K, 5): u, v, depth / max_depth, peak, valid
    for k, (u, v) in enumerate([(0.625, 0.375), (0.375, 0.625)]):
        col = u * 32 - 0.5  # pixel-centre convention: pixel j covers [j, j + 1), centre j + 0.5
        assert torch.allclose(x[k, :2], torch.tensor([u, v]), atol=1e-6)
        assert abs(float(x[k, 2]) - 1.5 * col / 31 / 2.0) < 1e-5 and float(x[k, 3]) > 0.99 and float(x[k, 4]) == 1
    feats.clear()
    tok(logits)  # without depth: zero depth, flag 0
    assert float(feats["x"][0, :, 2].abs().sum()) == 0 and float(feats["x"][0, :, 4].sum()) == 0


def test_grounding_tokens_reach_the_action_head_and_survive_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    cfg = compact_cfg(grounding=GroundingConfig(weight=1.0, tokens=True))
    p = MEgoHandPolicy(cfg).eval()
    b = sample_batch()
    text = p.prepare_text(b["instruction"], 2)
    vl, mask, *_, logits = p.encode_tokens(b["image"], text)
    base, *_ = MEgoHandPolicy(compact_cfg(grounding=GroundingConfig(weight=1.0))).encode_tokens(b["image"], text)
    assert vl.shape[1] == base.shape[1] + 2 and mask.shape == vl.shape[:2] and bool(mask[:, -2:].all())
    assert logits.shape == (2, p.backbone.image_grid**2, 2)
    torch.nn.init.normal_(p.grounding_tokens.target)  # the tokens change the action: the head reads them
    noise = torch.randn(2, cfg.horizon, cfg.action_dim)
    state = b["state"]
    a1 = p.sample(b["image"], text, state, noise, 2)
    with torch.no_grad():
        p.grounding_tokens.target.add_(1.0)
    assert not torch.allclose(a1, p.sample(b["image"], text, state, noise, 2))
    p.save_pretrained(tmp_path / "m")
    q = MEgoHandPolicy.from_pretrained(tmp_path / "m").eval()
    assert q.config.grounding.tokens and torch.equal(q.grounding_tokens.target, p.grounding_tokens.target)
    assert torch.allclose(q.sample(b["image"], text, state, noise, 2), p.sample(b["image"], text, state, noise, 2))
    loss, info = p.train()(grounded_batch())
    assert torch.isfinite(loss) and "loss_ground" in info


def test_teacher_logits_point_at_the_given_location_where_used():
    logits = torch.randn(3, 64, 2)
    uv = torch.tensor([[[0.3, 0.6], [0.5, 0.5]], [[0.7, 0.35], [0.4, 0.45]], [[0.55, 0.35], [0.6, 0.6]]])
    use = torch.tensor([[True, False], [True, True], [False, False]])
    out = teacher_logits(logits, uv, use, sigma=0.75)
    loc, _ = expected_locations(out)
    assert torch.allclose(loc[use], uv[use], atol=2e-3)  # the Gaussian's mean, away from the 8 x 8 grid's edges
    assert torch.equal(out[~use[:, None, :].expand_as(out)], logits[~use[:, None, :].expand_as(logits)])
    # the head's training target: its cross-entropy against the teacher logits is the target's entropy
    t = gaussian_targets(uv, 8, 0.75)
    entropy = -(t * t.log()).sum(-1)
    assert torch.allclose(grounding_loss(out[:1, :, :1], uv[:1, :1], use[:1, :1], 0.75), entropy[0, 0], atol=1e-4)


def test_teacher_forcing_feeds_the_ground_truth_to_the_action_head_in_training_only():
    torch.manual_seed(0)
    b = grounded_batch()
    b["ground_valid"] = torch.ones(2, 2, dtype=torch.bool)

    def fm_loss(p, seed=0):
        torch.manual_seed(seed)
        return float(p(b)[1]["loss_fm"])

    for teacher, follows_head in ((1.0, False), (0.0, True)):
        torch.manual_seed(0)
        cfg = compact_cfg(grounding=GroundingConfig(weight=1.0, tokens=True, teacher=teacher))
        p = MEgoHandPolicy(cfg).train()
        torch.nn.init.normal_(p.grounding_tokens.target)
        before = fm_loss(p)
        with torch.no_grad():
            for w in p.grounding_head.parameters():
                w.add_(torch.randn_like(w))
        assert (fm_loss(p) != before) == follows_head, teacher  # forced tokens: the head's answer is not read
    # inference reads the head whatever the training did
    text = p.prepare_text(b["instruction"], 2)
    noise = torch.randn(2, cfg.horizon, cfg.action_dim)
    p.eval()
    a1 = p.sample(b["image"], text, b["state"], noise, 2)
    forced = MEgoHandPolicy(replace(cfg, grounding=replace(cfg.grounding, teacher=1.0)))
    forced.load_state_dict(p.state_dict())
    assert torch.allclose(forced.eval().sample(b["image"], text, b["state"], noise, 2), a1)
    # sample(teacher=...) forces the tokens at inference (the probe's diagnostic): unused marks change nothing
    uv = torch.tensor([[[0.2, 0.2], [0.5, 0.5]], [[0.8, 0.7], [0.5, 0.5]]])
    none = torch.zeros(2, 2, dtype=torch.bool)
    assert torch.allclose(p.sample(b["image"], text, b["state"], noise, 2, teacher=(uv, none)), a1)
    assert not torch.allclose(p.sample(b["image"], text, b["state"], noise, 2, teacher=(uv, ~none)), a1)
    for lone in (dict(teacher=0.5), dict(tokens_norm=True)):
        try:
            MEgoHandPolicy(compact_cfg(grounding=GroundingConfig(weight=1.0, **lone)))
            raise AssertionError(f"{lone} without grounding tokens must be refused")
        except ValueError as e:
            assert "--model.grounding.tokens" in str(e)


def test_grounded_state_starts_as_the_plain_policy_then_follows_the_head(tmp_path):
    torch.manual_seed(0)
    b = grounded_batch()
    b["ground_valid"] = torch.ones(2, 2, dtype=torch.bool)
    cfg = compact_cfg(grounding=GroundingConfig(weight=1.0, state=True))
    p = MEgoHandPolicy(cfg).eval()
    plain = MEgoHandPolicy(compact_cfg(grounding=GroundingConfig(weight=1.0))).eval()
    missing, unexpected = plain.load_state_dict(p.state_dict(), strict=False)
    assert not missing and unexpected and all(k.startswith("grounding_state.") for k in unexpected)
    text = p.prepare_text(b["instruction"], 2)
    noise = torch.randn(2, cfg.horizon, cfg.action_dim)
    a0 = plain.sample(b["image"], text, b["state"], noise, 2)
    assert torch.allclose(p.sample(b["image"], text, b["state"], noise, 2), a0)  # zero last layer: as before
    with torch.no_grad():
        torch.nn.init.normal_(p.grounding_state.mlp[-1].weight)
    a1 = p.sample(b["image"], text, b["state"], noise, 2)
    assert not torch.allclose(a1, a0)
    # what it reads: both targets' grounding_features, in order
    seen = {}
    p.grounding_state.mlp[0].register_forward_pre_hook(lambda m, i: seen.update(x=i[0]) or None)
    logits = p.encode_tokens(b["image"], text, ground=True)[-1]
    p.sample(b["image"], text, b["state"], noise, 2)
    assert torch.allclose(seen["x"], grounding_features(logits, None, None, 2.0).flatten(1), atol=1e-6)
    # forced at inference (the probe's diagnostic), and through a checkpoint
    uv = torch.tensor([[[0.2, 0.2], [0.5, 0.5]], [[0.8, 0.7], [0.5, 0.5]]])
    mark = torch.ones(2, 2, dtype=torch.bool)
    assert not torch.allclose(p.sample(b["image"], text, b["state"], noise, 2, teacher=(uv, mark)), a1)
    p.save_pretrained(tmp_path / "m")
    q = MEgoHandPolicy.from_pretrained(tmp_path / "m").eval()
    assert q.config.grounding.state and torch.allclose(q.sample(b["image"], text, b["state"], noise, 2), a1)
    # teacher forcing: with every target forced the flow loss no longer reads the head's weights
    for teacher, follows_head in ((1.0, False), (0.0, True)):
        f = MEgoHandPolicy(replace(cfg, grounding=replace(cfg.grounding, teacher=teacher))).train()
        f.load_state_dict(p.state_dict())
        torch.manual_seed(0)
        before = float(f(b)[1]["loss_fm"])
        with torch.no_grad():
            for w in f.grounding_head.parameters():
                w.add_(torch.randn_like(w))
        torch.manual_seed(0)
        assert (float(f(b)[1]["loss_fm"]) != before) == follows_head, teacher


def test_grounded_state_dropout_and_guidance_against_the_plain_state_token():
    torch.manual_seed(0)
    b = grounded_batch()
    cfg = compact_cfg(grounding=GroundingConfig(weight=1.0, state=True))
    p = MEgoHandPolicy(cfg).eval()
    with torch.no_grad():
        torch.nn.init.normal_(p.grounding_state.mlp[-1].weight)
    zeroed = MEgoHandPolicy(cfg).eval()
    zeroed.load_state_dict(p.state_dict())
    with torch.no_grad():
        zeroed.grounding_state.mlp[-1].weight.zero_()
        zeroed.grounding_state.mlp[-1].bias.zero_()

    def variant(weights=p, **flow_or_grounding):
        flow = {k: v for k, v in flow_or_grounding.items() if k == "ground_guidance"}
        ground = {k: v for k, v in flow_or_grounding.items() if k != "ground_guidance"}
        q = MEgoHandPolicy(replace(cfg, flow=replace(cfg.flow, **flow), grounding=replace(cfg.grounding, **ground)))
        q.load_state_dict(weights.state_dict())
        return q

    text = p.prepare_text(b["instruction"], 2)
    noise = torch.randn(2, cfg.horizon, cfg.action_dim)
    run = lambda q: q.eval().sample(b["image"], text, b["state"], noise, 3)  # noqa: E731
    plain, with_ground = run(zeroed), run(p)
    assert not torch.allclose(plain, with_ground)
    # w_g = 0 is the plain state token's velocity, w_g = 1 the grounded one's; w_g = 2 goes beyond, linearly per step
    assert torch.allclose(run(variant(ground_guidance=0.0)), plain, atol=1e-5)
    assert torch.allclose(run(variant(ground_guidance=1.0)), with_ground)
    assert not torch.allclose(run(variant(ground_guidance=2.0)), with_ground)
    # state dropout: a dropped sample goes without the head's answer, as if its encoder were zero (same draws)
    losses = {}
    for rate in (1.0, 0.0):
        for name, weights in (("trained", p), ("zeroed", zeroed)):
            torch.manual_seed(0)
            losses[rate, name] = float(variant(weights, state_dropout=rate).train()(b)[1]["loss_fm"])
    assert losses[1.0, "trained"] == losses[1.0, "zeroed"] and losses[0.0, "trained"] != losses[0.0, "zeroed"]
    for bad in (dict(state_dropout=0.1), dict(ground_guidance=2.0)):
        flow = {k: v for k, v in bad.items() if k == "ground_guidance"}
        ground = {k: v for k, v in bad.items() if k != "ground_guidance"}
        with pytest.raises(ValueError, match="--model.grounding.state"):
            MEgoHandPolicy(compact_cfg(flow=replace(cfg.flow, **flow),
                                       grounding=GroundingConfig(weight=1.0, **ground)))


def test_load_policy_sets_ground_guidance_and_refuses_it_without_a_grounded_state(tmp_path):
    from megohand.errors import UserError
    from megohand.inference.policy import load_policy

    torch.manual_seed(0)
    b = grounded_batch()
    MEgoHandPolicy(compact_cfg(grounding=GroundingConfig(weight=1.0, state=True))).save_pretrained(tmp_path / "s")
    MEgoHandPolicy(compact_cfg(grounding=GroundingConfig(weight=1.0))).save_pretrained(tmp_path / "plain")
    guided = load_policy(tmp_path / "s", ground_guidance=0.0).model
    assert guided.config.flow.ground_guidance == 0.0
    assert load_policy(tmp_path / "s").model.config.flow.ground_guidance == 1.0  # the checkpoint's
    with torch.no_grad():  # w_g = 0: the grounded state's own contribution is gone
        torch.nn.init.normal_(guided.grounding_state.mlp[-1].weight)
        text = guided.prepare_text(b["instruction"], 2)
        noise = torch.randn(2, guided.config.horizon, guided.config.action_dim)
        out = guided.sample(b["image"], text, b["state"], noise, 2)
        guided.grounding_state.mlp[-1].weight.zero_()
        assert torch.allclose(out, guided.sample(b["image"], text, b["state"], noise, 2), atol=1e-5)
    with pytest.raises(UserError, match="--model.grounding.state"):
        load_policy(tmp_path / "plain", ground_guidance=2.0)


def test_grounding_state_mlp_reads_two_targets():
    enc = GroundingState(16, 8, max_depth=2.0)
    logits = torch.randn(3, 16, 2)
    with torch.no_grad():
        assert enc(logits).shape == (3, 16) and float(enc(logits).abs().max()) == 0.0  # zero at the start
    assert enc.mlp[0].in_features == 10


def test_normed_grounding_tokens_have_the_layer_norm_scale():
    logits = torch.randn(3, 16, 2)
    tok = GroundingTokens(32, max_depth=2.0, norm=True)
    out = tok(logits)
    # LayerNorm at its initial affine (1, 0): each token has zero mean and unit variance over its 32 features
    assert torch.allclose(out.mean(-1), torch.zeros(3, 2), atol=1e-5)
    assert torch.allclose(out.var(-1, unbiased=False), torch.ones(3, 2), atol=1e-3)
    assert GroundingTokens(32, max_depth=2.0).norm is None  # off by default: older checkpoints load unchanged


def test_film_starts_as_the_plain_cnn_then_reads_the_sentence(tmp_path):
    from megohand.models.depth import SmallCNN

    torch.manual_seed(0)
    film, plain = SmallCNN(3, 32, num_down=2, cond_dim=8), SmallCNN(3, 32, num_down=2)
    plain.load_state_dict({k: v for k, v in film.state_dict().items() if not k.startswith("film.")})
    x, cond = torch.randn(2, 3, 16, 16), torch.randn(2, 8)
    assert torch.allclose(film(x, cond), plain(x), atol=1e-6)  # zero-initialised: identity conditioning
    # hand-computed FiLM of the first stage: x * (1 + gamma) + beta after the GroupNorm
    with torch.no_grad():
        film.film[0].bias[:16] = 1.0   # gamma = 1 on all 16 channels of stage 1 -> that stage's normed output doubles
        film.film[0].bias[16:] = 0.5   # beta = 0.5
    conv, norm, act = list(film.net)[:3]
    stage1 = act(norm(conv(x)) * 2 + 0.5)
    rest = torch.nn.Sequential(*list(film.net)[3:])
    with torch.no_grad():
        assert torch.allclose(film(x, cond), rest(stage1), atol=1e-5)
    # in the policy: a different sentence changes the image tokens only with film
    cfg = compact_cfg(modalities="TI")
    cfg = replace(cfg, backbone=cfg.backbone.replace(film=True))
    p = MEgoHandPolicy(cfg).eval()
    for lin in p.backbone.vision.film:
        torch.nn.init.normal_(lin.weight, std=0.5)
    img = torch.randint(0, 255, (1, 3, 32, 32), dtype=torch.uint8)
    a = p.backbone.vision(img.float() / 127.5 - 1, p.backbone.text_tokens(p.prepare_text(["the red box"], 1)).mean(1))
    b = p.backbone.vision(img.float() / 127.5 - 1, p.backbone.text_tokens(p.prepare_text(["the blue box"], 1)).mean(1))
    assert not torch.allclose(a, b)
    p.save_pretrained(tmp_path / "m")
    q = MEgoHandPolicy.from_pretrained(tmp_path / "m").eval()
    assert q.config.backbone.compact.film and torch.equal(q.backbone.vision.film[0].weight, p.backbone.vision.film[0].weight)
    text = p.prepare_text(["the red box"], 1)
    assert torch.allclose(q.encode_tokens(img, text)[0], p.encode_tokens(img, text)[0], atol=1e-6)
    # without text there is nothing to condition on: a plain CNN
    assert MEgoHandPolicy(replace(cfg, modalities="V")).backbone.vision.film is None


def test_referring_question_trains_the_object_channel_and_is_off_by_default():
    torch.manual_seed(0)
    b = grounded_batch()
    b.update(refer_text=["the red cube", ""], refer_uv=torch.tensor([[0.2, 0.7], [0.0, 0.0]]),
             refer_valid=torch.tensor([True, False]))
    assert "loss_refer" not in MEgoHandPolicy(compact_cfg(grounding=GroundingConfig(weight=1.0))).train()(b)[1]
    p = MEgoHandPolicy(compact_cfg(grounding=GroundingConfig(weight=1.0, refer=0.5))).train()
    loss, info = p(b)
    # its value: the grounding loss of the object channel for the question's text and location, sample 0 only
    text = p.prepare_text(b["refer_text"], 2)
    logits = p.encode_tokens(b["image"], text, b["depth"], b["has_depth"], ground=True)[-1]
    want = grounding_loss(logits[..., :1], b["refer_uv"][:, None], torch.tensor([[True], [False]]), 0.75)
    assert torch.allclose(info["loss_refer"], want, atol=1e-5)
    assert torch.allclose(info["loss"], info["loss_fm"] + info["loss_depth"] * p.config.depth.supervision_weight
                          + info["loss_ground"] + 0.5 * info["loss_refer"], atol=1e-5)



def test_referring_question_reuses_the_image_pass_exactly():
    """The referring question reuses the main pass's image and depth encodings: loss and every gradient are those
    of a run that encodes the pictures again for the question (FiLM, whose image tokens read the text, recomputes
    them)."""
    b = grounded_batch()
    b.update(refer_text=["the red cube", "the blue ball"], refer_uv=torch.tensor([[0.2, 0.7], [0.6, 0.3]]),
             refer_valid=torch.tensor([True, True]))
    for film in (False, True):
        torch.manual_seed(0)
        cfg = compact_cfg(grounding=GroundingConfig(weight=1.0, refer=0.5))
        cfg = replace(cfg, backbone=replace(cfg.backbone, compact=replace(cfg.backbone.compact, film=film)))
        p = MEgoHandPolicy(cfg).train()
        runs = []
        for reuse in (True, False):
            p.zero_grad()
            if not reuse:  # every encode_tokens call encodes its pictures itself
                shared = p.encode_tokens
                p.encode_tokens = lambda *a, pixels=None, **k: shared(*a, **k)
            torch.manual_seed(1)
            loss, _ = p(b)
            loss.backward()
            runs.append((loss.detach(), {n: q.grad.clone() for n, q in p.named_parameters() if q.grad is not None}))
            p.__dict__.pop("encode_tokens", None)
        (l1, g1), (l2, g2) = runs
        assert torch.allclose(l1, l2, atol=1e-6) and g1.keys() == g2.keys()
        assert any("backbone.vision" in n for n in g1)
        for n in g1:
            assert torch.allclose(g1[n], g2[n], atol=1e-5, rtol=1e-4), n
        assert (p.encode_pixels(b["image"], b["depth"], b["has_depth"])["vision"] is None) == film

def _matching_task(n: int, grid: int = 9, dim: int = 16, seed: int = 0):
    """Each of ``grid`` positions shows a different colour (one-hot in the first 9 dims); the context token names
    one of them; the answer is where that colour is. Position alone says nothing: chance is 1 / grid."""
    g = torch.Generator().manual_seed(seed)
    colours = torch.stack([torch.randperm(grid, generator=g) for _ in range(n)])  # (n, grid)
    tokens = torch.nn.functional.one_hot(colours, dim).float()
    asked = torch.randint(0, grid, (n,), generator=g)
    context = torch.nn.functional.one_hot(asked, dim).float()[:, None]  # (n, 1, dim)
    answer = (colours == asked[:, None]).float().argmax(-1)
    return tokens, context, answer


def test_query_head_matches_words_to_positions_where_the_linear_head_cannot():
    from megohand.models.grounding import GroundingHead, QueryGroundingHead

    tokens, context, answer = _matching_task(512)
    test_tokens, test_context, test_answer = _matching_task(256, seed=1)
    mask = torch.ones(context.shape[:2], dtype=torch.bool)
    accuracy = {}
    for name, head in (("query", QueryGroundingHead(16, heads=2)), ("linear", GroundingHead(16))):
        torch.manual_seed(0)
        opt = torch.optim.Adam(head.parameters(), lr=1e-2)
        for _ in range(150):
            loss = torch.nn.functional.cross_entropy(head(tokens, context, mask)[..., 0], answer)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            pred = head(test_tokens, test_context, torch.ones(256, 1, dtype=torch.bool))[..., 0].argmax(-1)
        accuracy[name] = float((pred == test_answer).float().mean())
    assert accuracy["query"] > 0.9 and accuracy["linear"] < 0.25, accuracy


def test_query_head_ignores_padding_and_survives_a_checkpoint(tmp_path):
    from megohand.models.grounding import QueryGroundingHead

    torch.manual_seed(0)
    head = QueryGroundingHead(16, heads=2).eval()
    tokens, context = torch.randn(2, 9, 16), torch.randn(2, 3, 16)
    padded = torch.cat([context, torch.randn(2, 4, 16) * 100], dim=1)
    mask = torch.tensor([[True] * 3 + [False] * 4] * 2)
    with torch.no_grad():
        assert torch.allclose(head(tokens, context, torch.ones(2, 3, dtype=torch.bool)), head(tokens, padded, mask),
                              atol=1e-5)
        assert not torch.allclose(head(tokens, context, mask[:, :3]), head(tokens, context.flip(0), mask[:, :3]))
    p = MEgoHandPolicy(compact_cfg(grounding=GroundingConfig(weight=1.0, head="query", tokens=True))).eval()
    assert isinstance(p.grounding_head, QueryGroundingHead)
    b = sample_batch()
    text = p.prepare_text(b["instruction"], 2)
    p.save_pretrained(tmp_path / "m")
    q = MEgoHandPolicy.from_pretrained(tmp_path / "m").eval()
    assert q.config.grounding.head == "query"
    with torch.no_grad():
        assert torch.allclose(q.encode_tokens(b["image"], text)[-1], p.encode_tokens(b["image"], text)[-1], atol=1e-5)
    loss, info = p.train()(grounded_batch())
    assert torch.isfinite(loss) and "loss_ground" in info


def test_cell_labels_hand_computed():
    from megohand.models.grounding import cell_labels

    # 4 x 4 grid, cell centres at (i + 0.5) / 4; colour ids < 6, shape ids < 4; 6 and 4 are "none"
    uv = torch.tensor([[[0.5, 0.5], [0.1, 0.1], [0.9, 0.1]]])
    attr = torch.tensor([[[2, 1], [0, 3], [-1, -1]]])  # the third is absent: never a label
    got = cell_labels(uv, attr, grid=4, colours=6, shapes=4)[0].view(4, 4, 2)
    want_colour = torch.full((4, 4), 6)
    want_shape = torch.full((4, 4), 4)
    want_colour[1:3, 1:3], want_shape[1:3, 1:3] = 2, 1  # (0.5, 0.5) is 0.71 cells from the 4 central centres
    want_colour[0, 0], want_shape[0, 0] = 0, 3  # (0.1, 0.1): 0.14 cells from cell (0, 0), 1.1 from its neighbours
    assert torch.equal(got[..., 0], want_colour) and torch.equal(got[..., 1], want_shape)


def test_scene_parsing_loss_in_the_policy_and_off_by_default():
    from megohand.models.grounding import cell_labels, parse_loss

    torch.manual_seed(0)
    b = grounded_batch()
    b["object_uv"] = torch.tensor([[[0.3, 0.6], [0.8, 0.2]], [[0.5, 0.5], [0.0, 0.0]]])
    b["object_attr"] = torch.tensor([[[1, 2], [4, 0]], [[-1, -1], [-1, -1]]])  # sample 1 shows no object
    assert "loss_parse" not in MEgoHandPolicy(compact_cfg(grounding=GroundingConfig(weight=1.0))).train()(b)[1]
    for tokens in (False, True):
        p = MEgoHandPolicy(compact_cfg(grounding=GroundingConfig(weight=1.0, parse=0.5, tokens=tokens))).train()
        loss, info = p(b)
        # its value: colour + shape cross-entropy over sample 0's cells, from the image tokens of the same pass
        vl = p.encode_tokens(b["image"], p.prepare_text(b["instruction"], 2), b["depth"], b["has_depth"])[0]
        img = vl[:, -(p.backbone.image_grid**2 + 2 * tokens):vl.shape[1] - 2 * tokens]
        labels = cell_labels(b["object_uv"], b["object_attr"], p.backbone.image_grid, 6, 4)
        logits = p.parse_head(img)
        want = (torch.nn.functional.cross_entropy(logits[0, :, :7], labels[0, :, 0])
                + torch.nn.functional.cross_entropy(logits[0, :, 7:], labels[0, :, 1]))
        assert torch.allclose(info["loss_parse"], want, atol=1e-5)
        assert torch.allclose(parse_loss(logits, labels, torch.tensor([True, False]), 6), want, atol=1e-5)


def test_model_side_crop_is_refused_with_grounding():
    cfg = compact_cfg(grounding=GroundingConfig(weight=1.0))
    with pytest.raises(ValueError, match="backbone.augment crops the image"):
        MEgoHandPolicy(replace(cfg, backbone=cfg.backbone.replace(augment=True)))
