"""The frozen text encoder's cache (models/backbones/text_cache.py) against the encoder run on every batch."""

import dataclasses

import torch

from megohand.models import MEgoHandPolicy

from test_models_fixtures import sample_batch
from test_models_policy import compact_cfg, random_normalizer

torch.set_num_threads(1)
STRINGS = ["reach for the red cube", "", "put the yellow cylinder on the orange mat next to the blue box",
           "reach for the red cube", "the green cone"]


def policy():
    torch.manual_seed(0)
    return MEgoHandPolicy(compact_cfg(), random_normalizer()).train()


def test_cached_tokens_match_the_encoder_and_encode_each_string_once():
    p = policy()
    bb = p.backbone
    bb.use_text_cache(False)
    eager = bb.prepare_text(STRINGS, len(STRINGS), p.device)
    assert bb.use_text_cache()
    cached = bb.prepare_text(STRINGS, len(STRINGS), p.device)
    assert "hidden" in cached and bb.text_cache.encoded == 4  # the repeated string once
    assert torch.equal(cached["mask"], eager["mask"]) and cached["padded"] == eager["padded"] is True
    with torch.no_grad():
        want, got = bb.text_tokens(eager), bb.text_tokens(cached)
    m = eager["mask"]
    torch.testing.assert_close(got[m], want[m], rtol=1e-4, atol=1e-5)  # padded positions are masked everywhere
    again = bb.prepare_text(STRINGS[:1] * 3, 3, p.device)  # one string: no padding, as the tokenizer would give
    assert bb.text_cache.encoded == 4 and again["padded"] is False
    assert again["mask"].shape[1] == len(bb.tokenizer(STRINGS[0])["input_ids"])


def test_on_from_the_start_in_both_modes_but_not_for_a_trained_encoder():
    p = policy()
    assert "hidden" in p.backbone.prepare_text(STRINGS, 5, p.device)
    p.eval()
    assert "hidden" in p.backbone.prepare_text(STRINGS, 5, p.device)
    p.backbone.use_text_cache(False)
    assert "input_ids" in p.backbone.prepare_text(STRINGS, 5, p.device)
    p.backbone.cfg = dataclasses.replace(p.backbone.cfg, tune_text=True)
    assert not p.backbone.use_text_cache() and p.backbone.text_cache is None


def test_a_full_table_leaves_the_batch_to_the_encoder():
    from megohand.models.backbones.text_cache import FrozenTextCache

    p = policy()
    bb = p.backbone
    bb.text_cache = FrozenTextCache(max_strings=2)
    assert "hidden" in bb.prepare_text(STRINGS[:2], 2, p.device)
    assert "input_ids" in bb.prepare_text(STRINGS[:3], 3, p.device) and bb.text_cache.encoded == 2
    assert "hidden" in bb.prepare_text(STRINGS[1::-1], 2, p.device)


def test_new_weights_rebuild_the_table():
    p = policy()
    bb = p.backbone
    bb.use_text_cache()
    before = bb.text_tokens(bb.prepare_text(STRINGS, 5, p.device)).detach()
    with torch.no_grad():
        for q in bb.text.parameters():
            q.mul_(1.1)  # a checkpoint loaded in place
    after = bb.text_tokens(bb.prepare_text(STRINGS, 5, p.device)).detach()
    bb.text_cache = None
    eager = bb.text_tokens(bb.prepare_text(STRINGS, 5, p.device)).detach()
    m = bb.prepare_text(STRINGS, 5, p.device)["mask"]
    assert not torch.allclose(after[m], before[m])
    torch.testing.assert_close(after[m], eager[m], rtol=1e-4, atol=1e-5)


def test_training_loss_and_gradients_match_without_the_cache():
    results = []
    for cache in (False, True):
        p = policy()
        p.backbone.use_text_cache(cache)
        torch.manual_seed(1)
        loss, _ = p(sample_batch(L=4))
        loss.backward()
        results.append((loss.detach(), {n: q.grad.clone() for n, q in p.named_parameters() if q.grad is not None}))
    (l0, g0), (l1, g1) = results
    torch.testing.assert_close(l1, l0, rtol=1e-4, atol=1e-6)
    assert g0.keys() == g1.keys()
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], rtol=1e-3, atol=1e-5, msg=n)
