"""Grounding supervision and modality dropout of MEgoHandPolicy (tiny compact model).

Oracles: the target distribution against a hand-computed Gaussian on a 4 x 4 grid; the loss of a head that puts
all its mass on the right cell is lower than the loss of one that puts it on another; dropout seen through what
reaches the text encoder.
"""

import math
from dataclasses import replace

import torch

from megohand.models import MEgoHandPolicy
from megohand.models.config import GroundingConfig, ModalityDropoutConfig
from megohand.models.grounding import gaussian_targets, grounding_loss

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

    def spy_tokens(image, text, depth=None, has_depth=None):
        seen["image"], seen["has_depth"] = image.clone(), has_depth
        return orig_tokens(image, text, depth, has_depth)

    p.prepare_text, p.encode_tokens = spy_text, spy_tokens
    p(grounded_batch())
    assert seen["text"] == ["", ""] and int(seen["image"].abs().sum()) == 0 and not bool(seen["has_depth"].any())
    p.eval()
    b = grounded_batch()
    p(b)  # no dropout outside training
    assert seen["text"] == list(b["instruction"]) and torch.equal(seen["image"], b["image"])
