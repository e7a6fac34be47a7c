"""MEgoHandPolicy end to end at tiny size: losses, gradients, modalities, sampling, normalisation, persistence."""

import json
import shutil
from dataclasses import replace

import pytest
import torch

from megohand import io
from megohand.data.normalize import Normalizer
from megohand.errors import UserError
from megohand.models import MEgoHandPolicy, PolicyConfig
from megohand.models.config import DiTConfig
from megohand.models.policy import MinMax, normalizer_bounds

from test_models_fixtures import sample_batch, tiny_depth_anything, tiny_llm, tiny_resnet, tiny_siglip

torch.set_num_threads(1)
SMALL_DIT = DiTConfig(width=32, num_layers=2, num_heads=4, dropout=0.1, output_dim=32, head_hidden=32)


def compact_cfg(**kw):
    c = PolicyConfig.compact()
    return replace(c, horizon=4, dit=SMALL_DIT, backbone=c.backbone.replace(image_size=32, width=32, fusion_layers=1), **kw)


def random_normalizer(seed=0):
    g = torch.Generator().manual_seed(seed)
    lo_s, lo_a = torch.randn(109, generator=g), torch.randn(99, generator=g)
    hi_s, hi_a = lo_s + torch.rand(109, generator=g) + 0.1, lo_a + torch.rand(99, generator=g) + 0.1
    hi_s[95] = lo_s[95]  # one constant dim
    return Normalizer({"state": (lo_s.numpy(), hi_s.numpy()), "action": (lo_a.numpy(), hi_a.numpy())})


@pytest.fixture(scope="module")
def compact_policy():
    torch.manual_seed(0)
    return MEgoHandPolicy(compact_cfg(), random_normalizer())


def test_compact_forward_backward_reaches_every_trainable_parameter(compact_policy):
    p = compact_policy.train()
    loss, info = p(sample_batch(L=4))
    assert set(info) == {"loss", "loss_fm", "loss_depth"} and torch.isfinite(loss)
    p.zero_grad()
    loss.backward()
    missing = [n for n, q in p.named_parameters() if q.requires_grad and q.grad is None]
    assert missing == []
    assert not any(q.requires_grad for q in p.backbone.text.parameters())  # frozen MiniLM
    assert p.backbone.text.training is False
    assert not any(k.startswith("_head_fn") for k in p.state_dict())


@pytest.mark.parametrize("modalities,text,image,depth", [("T", True, False, False), ("V", False, True, False),
                                                         ("TI", True, True, False), ("TID", True, True, True)])
def test_modalities(modalities, text, image, depth):
    p = MEgoHandPolicy(compact_cfg(modalities=modalities))
    assert (p.backbone.text is not None) == text and (p.backbone.vision is not None) == image
    assert (p.depth_encoder is not None) == depth
    vl, mask, *_ = p.encode(sample_batch()["image"], ["a cup", "the drawer"])
    n_text = 4 if text else 0  # [CLS] word [SEP] padded to the longer one: "the drawer" -> 4 tokens
    assert vl.shape[1] == n_text + (4 if image else 0)  # 32 px / 16 -> 2 x 2 image tokens
    loss, _ = p(sample_batch(L=4))
    loss.backward()


def test_depth_supervision_switch():
    p = MEgoHandPolicy(compact_cfg(depth=replace(PolicyConfig().depth, supervision=False)))
    assert p.depth_head is None and "loss_depth" not in p(sample_batch(L=4))[1]


def test_predict_chunk_shape_reproducible_and_keeps_mode(compact_policy):
    p = compact_policy.train()
    b = sample_batch(L=4)
    a1 = p.predict_chunk(b["image"], b["instruction"], b["state"], b["depth"], steps=3,
                         generator=torch.Generator().manual_seed(1))
    a2 = p.predict_chunk(b["image"], b["instruction"], b["state"], b["depth"], steps=3,
                         generator=torch.Generator().manual_seed(1))
    assert a1.shape == (2, 4, 99) and a1.dtype == torch.float32 and torch.equal(a1, a2)
    assert p.training  # mode restored
    a3 = p.predict_chunk(b["image"], b["instruction"], b["state"], None, steps=3, generator=torch.Generator().manual_seed(1))
    assert a3.shape == (2, 4, 99)


def test_noise_scale_scales_the_initial_noise(compact_policy):
    p = compact_policy.eval()
    b = sample_batch(L=4)
    obs = (b["image"], b["instruction"], b["state"], b["depth"])

    def run(scale, seed):
        return p.predict_chunk(*obs, steps=2, generator=torch.Generator().manual_seed(seed), noise_scale=scale)

    # oracle: the sampler integrated by hand from 0.5 x the same N(0, I) draw, and from zeros
    text = p.prepare_text(b["instruction"], 2)
    noise = p.draw_noise(2, torch.Generator().manual_seed(3))
    half = p.sample(b["image"], text, b["state"], 0.5 * noise, 2, b["depth"])
    zero = p.sample(b["image"], text, b["state"], torch.zeros_like(noise), 2, b["depth"])
    torch.testing.assert_close(run(0.5, 3), half)
    torch.testing.assert_close(run(0.0, 3), zero)
    torch.testing.assert_close(run(0.0, 4), zero)  # deterministic: the generator no longer matters
    assert not torch.allclose(run(1.0, 3), half)
    assert torch.equal(run(None, 3), run(1.0, 3))  # None = config.flow.noise_scale, 1 by default

    from megohand.inference.policy import ModelPolicy  # the wrapper eval / generate / demo use

    wrapped = ModelPolicy(p, "cpu", noise_scale=0.0)
    torch.testing.assert_close(wrapped.predict_chunk(*obs, steps=2, generator=torch.Generator().manual_seed(9)), zero)


def test_text_guidance_is_classifier_free_guidance_on_the_instruction(compact_policy):
    p = compact_policy.eval()
    b = sample_batch(L=4)

    def run(instructions, w, steps=1):
        return p.predict_chunk(b["image"], instructions, b["state"], b["depth"], steps=steps,
                               generator=torch.Generator().manual_seed(5), text_guidance=w)

    cond, empty = run(b["instruction"], None), run(["", ""], None)
    assert not torch.allclose(cond, empty)  # the instruction matters to this model
    torch.testing.assert_close(run(b["instruction"], 1.0), cond)
    torch.testing.assert_close(run(b["instruction"], 0.0), empty)  # w = 0: the empty-text velocity alone
    # oracle: one Euler step is affine in the velocity and the de-normalisation is affine, so the guided chunk
    # is empty + w (cond - empty) exactly
    for w in (2.0, 3.5):
        torch.testing.assert_close(run(b["instruction"], w), empty + w * (cond - empty), rtol=1e-4, atol=1e-4)
    # several steps: guidance changes the path, and the wrapper eval / generate / demo use passes it on
    two = run(b["instruction"], 2.0, steps=3)
    assert not torch.allclose(two, run(b["instruction"], None, steps=3))

    from megohand.inference.policy import ModelPolicy

    wrapped = ModelPolicy(p, "cpu", text_guidance=2.0)
    torch.testing.assert_close(wrapped.predict_chunk(b["image"], b["instruction"], b["state"], b["depth"], steps=3,
                                                     generator=torch.Generator().manual_seed(5)), two)

    # guidance only on the steps that start below config.flow.guidance_until
    full = p.config
    try:
        p.config = replace(full, flow=replace(full.flow, guidance_until=0.0))
        torch.testing.assert_close(run(b["instruction"], 2.0, steps=3), run(b["instruction"], None, steps=3))
        p.config = replace(full, flow=replace(full.flow, guidance_until=0.5))
        torch.testing.assert_close(run(b["instruction"], 2.0), empty + 2.0 * (cond - empty), rtol=1e-4, atol=1e-4)
        half = run(b["instruction"], 2.0, steps=4)  # steps at tau 0, 0.25 guided; 0.5, 0.75 plain
        assert not torch.allclose(half, run(b["instruction"], None, steps=4))
    finally:
        p.config = full
    assert not torch.allclose(half, run(b["instruction"], 2.0, steps=4))


def test_minmax_matches_normalizer_and_stays_float32():
    for mode in ("min_max", "q99"):
        n = random_normalizer(3)
        n = Normalizer({k: (n.lo[k], n.hi[k]) for k in ("state", "action")}, mode)
        mm = MinMax(normalizer_bounds(n, 109, 99))
        x = torch.randn(5, 109) * 3
        torch.testing.assert_close(mm.state(x), n.normalize(x, "state"))
        y = torch.rand(5, 4, 99) * 2 - 1
        torch.testing.assert_close(mm.unaction(y), n.unnormalize(y, "action"))
        torch.testing.assert_close(mm.action(mm.unaction(y)), y, rtol=1e-4, atol=1e-4)
    mm = mm.to(torch.bfloat16)
    assert mm.state_lo.dtype == torch.float32


def test_save_and_load_roundtrip(compact_policy, tmp_path):
    p = compact_policy
    p.save_pretrained(tmp_path / "ck")
    assert sorted(x.name for x in (tmp_path / "ck").iterdir()) == ["aux", "config.json", "model.safetensors", "normalizer.json"]
    q = MEgoHandPolicy.from_pretrained(tmp_path / "ck")
    assert q.config == p.config and q.normalizer == p.normalizer
    b = sample_batch(L=4)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    torch.testing.assert_close(q.predict_chunk(b["image"], b["instruction"], b["state"], b["depth"], generator=g()),
                               p.predict_chunk(b["image"], b["instruction"], b["state"], b["depth"], generator=g()))
    p.save_pretrained(tmp_path / "ck")  # overwrite in place, atomically
    assert not [x for x in tmp_path.iterdir() if x.name.startswith(".")]
    (tmp_path / "ck" / "normalizer.json").unlink()
    with pytest.raises(UserError, match="normalizer.json is missing"):
        MEgoHandPolicy.from_pretrained(tmp_path / "ck")


def test_paper_preset_tiny_end_to_end(tmp_path):
    src = tmp_path / "src"
    c = PolicyConfig.paper()
    cfg = replace(
        c, horizon=4, dit=SMALL_DIT,
        backbone=c.backbone.replace(vision_path=tiny_siglip(src / "v"), llm_path=tiny_llm(src / "l"), llm_layers=2),
        depth=replace(c.depth, encoder_path=tiny_resnet(src / "r"), supervision_size=8),
    )
    torch.manual_seed(0)
    p = MEgoHandPolicy(cfg, random_normalizer())
    loss, info = p(sample_batch(L=4))
    loss.backward()
    assert "loss_depth" in info
    assert p.depth_encoder.net.embedder.embedder.convolution.weight.grad.abs().sum() > 0  # via depth supervision
    p.save_pretrained(tmp_path / "ck")
    shutil.rmtree(src)  # the checkpoint must rebuild without the user's folders
    q = MEgoHandPolicy.from_pretrained(tmp_path / "ck")
    b = sample_batch(L=4)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    torch.testing.assert_close(q.predict_chunk(b["image"], b["instruction"], b["state"], b["depth"], generator=g()),
                               p.predict_chunk(b["image"], b["instruction"], b["state"], b["depth"], generator=g()))
    cfg_json = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert cfg_json["backbone"]["kind"] == "eagle"


def test_bucketed_prompt_padding_changes_shapes_not_predictions(tmp_path):
    """text_pad_multiple pads the prompts to a bucket length; with the padding masked in the DiT the chunk and the
    loss equal those of the unpadded batch (the oracle: the same weights without buckets)."""
    c = PolicyConfig.paper()
    cfg = replace(
        c, horizon=4, dit=replace(SMALL_DIT, mask_vl_padding=True, dropout=0.0), depth=replace(c.depth, encoder="cnn"),
        backbone=c.backbone.replace(vision_path=tiny_siglip(tmp_path / "v"), llm_path=tiny_llm(tmp_path / "l"),
                                    llm_layers=2),
    )
    torch.manual_seed(0)
    p = MEgoHandPolicy(cfg, random_normalizer()).eval()
    b = sample_batch(L=4)
    b["instruction"] = ["pick up the cup", "open the top drawer slowly please and then close it again"]
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    plain_text = p.backbone.prepare_text(b["instruction"], 2, "cpu")
    plain = p.predict_chunk(b["image"], b["instruction"], b["state"], b["depth"], generator=g())
    torch.manual_seed(1)
    plain_loss, _ = p(b)
    p.backbone.cfg = replace(p.backbone.cfg, text_pad_multiple=32)
    text = p.backbone.prepare_text(b["instruction"], 2, "cpu")
    S0, S = plain_text["input_ids"].shape[1], text["input_ids"].shape[1]
    assert S % 32 == 0 and S0 < S < S0 + 32 and text["padded"]
    torch.testing.assert_close(text["mask"].sum(1), plain_text["mask"].sum(1))
    torch.testing.assert_close(text["input_ids"][:, :S0], plain_text["input_ids"])
    torch.testing.assert_close(p.predict_chunk(b["image"], b["instruction"], b["state"], b["depth"], generator=g()),
                               plain, rtol=1e-4, atol=1e-5)
    torch.manual_seed(1)
    torch.testing.assert_close(p(b)[0], plain_loss, rtol=1e-4, atol=1e-5)


def test_paper_preset_with_depth_anything(tmp_path):
    c = PolicyConfig.paper()
    cfg = replace(
        c, horizon=4, dit=SMALL_DIT,
        backbone=c.backbone.replace(vision_path=tiny_siglip(tmp_path / "v"), llm_path=tiny_llm(tmp_path / "l"), llm_layers=1),
        depth=replace(c.depth, source="estimated", estimator_path=tiny_depth_anything(tmp_path / "da"),
                      encoder="cnn", supervision_size=8),
    )
    p = MEgoHandPolicy(cfg)
    b = sample_batch(L=4)
    loss, info = p(b)
    loss.backward()
    assert not any(k.startswith("depth_estimator.") for k in p.weights_state_dict())
    a = p.predict_chunk(b["image"], b["instruction"], b["state"], None)  # estimated depth needs no sensor depth
    assert a.shape == (2, 4, 99)
    # the checkpoint holds every weight but the estimator's, and loads back (the estimator from its own folder)
    p.save_pretrained(tmp_path / "ck")
    saved = set(io.load_safetensors(tmp_path / "ck" / io.WEIGHTS))
    assert saved == {k for k in p.state_dict() if not k.startswith("depth_estimator.")}
    q = MEgoHandPolicy.from_pretrained(tmp_path / "ck")
    for k, v in p.state_dict().items():
        torch.testing.assert_close(q.state_dict()[k], v, msg=k)


def test_bf16_weights_predict_without_autocast():
    torch.manual_seed(0)
    p = MEgoHandPolicy(compact_cfg(), random_normalizer()).to(torch.bfloat16)
    b = sample_batch(L=4)
    a = p.predict_chunk(b["image"], b["instruction"], b["state"], b["depth"], steps=2)
    assert a.dtype == torch.float32 and a.shape == (2, 4, 99) and torch.isfinite(a).all()
    assert p.norm.action_lo.dtype == torch.float32


def test_state_noise_trains_on_corrective_chunks_only_in_training(monkeypatch):
    """--model.state-noise: in training the state token and the flow target are the displaced start and its
    corrective chunk (megohand.hand.vector.perturb_start, checked against scipy in test_hand_vector); the
    displacements have the configured spread; evaluation mode and prob 0 leave the batch as it is."""
    import numpy as np

    import megohand.models.policy as mp
    from megohand.hand import vector as hv
    from megohand.models.config import StateNoiseConfig
    from test_hand_vector import random_params

    B, L = 64, 4
    rng = np.random.default_rng(0)
    batch = sample_batch(B=B, L=L)
    batch["state"] = hv.params_to_state(random_params(rng, (B,))).float()
    batch["action"] = hv.encode_chunk(batch["state"], hv.params_to_state(random_params(rng, (B, L))).float())
    calls, states, targets = [], [], []
    real_perturb, real_interpolate = mp.perturb_start, mp.fm.interpolate

    def spy_perturb(state, action, transl, rot):
        out = real_perturb(state, action, transl, rot)
        calls.append((transl, rot, out))
        return out

    def spy_interpolate(noise, action, tau):
        targets.append(action)
        return real_interpolate(noise, action, tau)

    monkeypatch.setattr(mp, "perturb_start", spy_perturb)
    monkeypatch.setattr(mp.fm, "interpolate", spy_interpolate)
    torch.manual_seed(0)
    p = MEgoHandPolicy(compact_cfg(state_noise=StateNoiseConfig(prob=0.5, transl=0.03, rot=0.2)), random_normalizer())
    p.head.state_encoder.register_forward_pre_hook(lambda mod, args: states.append(args[0]))
    p.train()(batch)
    (transl, rot, (state_p, action_p)), = calls
    moved = transl.norm(dim=-1) > 0
    assert 16 < int(moved.sum()) < 48 and torch.equal(moved, rot.norm(dim=-1) > 0)  # about half of 64
    assert abs(float(transl[moved].std()) - 0.03) < 0.008 and abs(float(rot[moved].std()) - 0.2) < 0.05
    torch.testing.assert_close(states[-1], p.norm.state(state_p))
    torch.testing.assert_close(targets[-1], p.norm.action(action_p))
    keep = ~moved
    torch.testing.assert_close(state_p[keep], batch["state"][keep], atol=1e-6, rtol=0)
    torch.testing.assert_close(action_p[keep], batch["action"][keep], atol=1e-6, rtol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # mixed precision: the rotations stay in float32
        p(batch)
    (transl, rot, (state_p, action_p)) = calls[-1]
    keep = transl.norm(dim=-1) == 0
    torch.testing.assert_close(state_p[keep], batch["state"][keep], atol=1e-6, rtol=0)
    torch.testing.assert_close(action_p[keep], batch["action"][keep], atol=1e-6, rtol=0)
    calls.clear()
    p.eval()(batch)
    assert calls == [] and torch.equal(states[-1], p.norm.state(batch["state"]))
    q = MEgoHandPolicy(compact_cfg(), random_normalizer()).train()
    q(batch)
    assert calls == []
    # the setting travels with the checkpoint's config
    assert PolicyConfig.from_dict(json.loads(json.dumps(p.config.to_dict()))) == p.config
