"""Backbones and depth modules built tiny from random transformers configs, saved with save_pretrained and
loaded back through the real loading path (no hub)."""


import numpy as np
import pytest
import torch

from megohand.models.config import BackboneConfig, DepthConfig
from megohand.models.depth import DepthEncoder, build_estimator

from test_models_fixtures import tiny_depth_anything, tiny_llm, tiny_resnet, tiny_siglip

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    return {
        "vision": tiny_siglip(d / "siglip"),
        "llama": tiny_llm(d / "llama", "llama"),
        "qwen2": tiny_llm(d / "qwen2", "qwen2"),
        "resnet": tiny_resnet(d / "resnet"),
        "da": tiny_depth_anything(d / "da"),
    }


def test_pixel_shuffle_matches_index_oracle():
    from megohand.models.backbones.eagle import pixel_shuffle

    x = torch.randn(2, 4, 6, 3)
    out = pixel_shuffle(x, 0.5)
    assert out.shape == (2, 2, 3, 12)
    ref = np.zeros((2, 2, 3, 12), np.float32)
    xn = x.numpy()
    for i in range(2):
        for j in range(3):
            for m in range(2):
                for k in range(2):
                    ref[:, i, j, (m * 2 + k) * 3:(m * 2 + k + 1) * 3] = xn[:, 2 * i + m, 2 * j + k]
    np.testing.assert_array_equal(out.numpy(), ref)


def _eagle_cfg(folders, family="llama", **kw):
    return BackboneConfig(kind="eagle").replace(vision_path=folders["vision"], llm_path=folders[family], llm_layers=2, **kw)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_eagle_backbone_loads_truncates_freezes_and_inserts_image(folders, family):
    from transformers import AutoConfig, AutoModel, SiglipVisionModel

    from megohand.models.backbones import build_backbone

    bb = build_backbone(_eagle_cfg(folders, family), out_dim=20, use_text=True, use_image=True).eval()
    assert len(bb.llm.layers) == 2 and bb.image_grid == 2 and bb.image_token_dim == 32
    # pretrained weights really come from the folders
    ref_v = SiglipVisionModel.from_pretrained(folders["vision"])
    torch.testing.assert_close(bb.vision.embeddings.patch_embedding.weight, ref_v.embeddings.patch_embedding.weight)
    # frozen LLM, trainable vision tower + mlp1 + projection
    assert not any(p.requires_grad for p in bb.llm.parameters())
    assert all(p.requires_grad for p in bb.vision.parameters()) and all(p.requires_grad for p in bb.mlp1.parameters())
    img = torch.rand(2, 3, 32, 32)
    instr = ["pick up the cup", "open the top drawer slowly please"]
    tokens, mask = bb(img, instr)
    assert tokens.shape[0] == 2 and tokens.shape[2] == 20 and mask.shape == tokens.shape[:2]
    assert mask[0].sum() < mask[1].sum()  # right padding of the shorter prompt
    # causal LM: tokens before <IMG_CONTEXT> ignore the image, tokens after it depend on it
    ids, _ = bb.tokenize(instr, "cpu")
    first = int((ids[0] == bb.img_context_id).nonzero()[0])
    tokens2, _ = bb(torch.rand(2, 3, 32, 32), instr)
    torch.testing.assert_close(tokens2[:, :first], tokens[:, :first])
    assert not torch.allclose(tokens2[:, first:], tokens[:, first:])
    # the truncated stack equals a model built with 2 layers from the same folder (text-only prompt)
    bt = build_backbone(_eagle_cfg(folders, family), out_dim=20, use_text=True, use_image=False).eval()
    ids, m = bt.tokenize(instr, "cpu")
    cfg2 = AutoConfig.from_pretrained(folders[family])
    cfg2.num_hidden_layers = 2
    if getattr(cfg2, "layer_types", None):
        cfg2.layer_types = cfg2.layer_types[:2]
    ref = AutoModel.from_pretrained(folders[family], config=cfg2).eval()
    if ref.get_input_embeddings().num_embeddings < len(bt.tokenizer):
        ref.resize_token_embeddings(len(bt.tokenizer))
        ref.get_input_embeddings().weight.data.copy_(bt.llm.get_input_embeddings().weight)
    h_ref = ref(input_ids=ids, attention_mask=m.long()).last_hidden_state
    h = bt.llm(inputs_embeds=bt.llm.get_input_embeddings()(ids), attention_mask=m.long()).last_hidden_state
    torch.testing.assert_close(h[m], h_ref[m], rtol=1e-4, atol=1e-4)
    # gradients reach the vision tower through the frozen LLM
    tokens, _ = bb.train()(img, instr)
    tokens.sum().backward()
    assert bb.vision.embeddings.patch_embedding.weight.grad.abs().sum() > 0
    assert bb.llm.training is False  # frozen LLM stays in eval mode


def test_eagle_lora(folders):
    pytest.importorskip("peft")
    from megohand.models.backbones import build_backbone

    bb = build_backbone(_eagle_cfg(folders, lora_rank=2), out_dim=8, use_text=True, use_image=True)
    trainable = [n for n, p in bb.llm.named_parameters() if p.requires_grad]
    assert trainable and all("lora" in n for n in trainable)


def test_eagle_missing_folder_is_a_clear_error(tmp_path):
    from megohand.models.backbones import build_backbone

    with pytest.raises(FileNotFoundError, match="no config.json"):
        build_backbone(BackboneConfig(kind="eagle").replace(vision_path=tmp_path, llm_path=tmp_path), 8, True, True)
    with pytest.raises(ValueError, match="vision-path"):
        build_backbone(BackboneConfig(kind="eagle"), 8, True, True)


def test_compact_text_encoder_is_the_pretrained_minilm():
    from sentence_transformers import SentenceTransformer

    from megohand.models.backbones import build_backbone, bundled_text_path

    bb = build_backbone(BackboneConfig(), out_dim=16, use_text=True, use_image=True).eval()
    assert not any(p.requires_grad for p in bb.text.parameters())
    sentences = ["pick up the cup on the table", "open the drawer"]
    enc = bb.tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = bb.text(**enc).last_hidden_state
    m = enc["attention_mask"][..., None].float()
    ours = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
    ref = SentenceTransformer(str(bundled_text_path()), device="cpu").encode(sentences, convert_to_tensor=True)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
    tokens, mask = bb(torch.rand(2, 3, 128, 128), sentences, torch.zeros(2, 64, 256))
    assert tokens.shape == (2, mask.shape[1], 16) and mask.shape[1] == enc["input_ids"].shape[1] + 64
    v_only = build_backbone(BackboneConfig(), 16, use_text=False, use_image=True)
    assert v_only.text is None and v_only(torch.rand(1, 3, 128, 128), None)[0].shape == (1, 64, 16)


def test_resnet_depth_encoder_loads_local_weights_and_starts_at_zero(folders):
    from transformers import ResNetModel

    enc = DepthEncoder("resnet", out_dim=12, grid=3, max_depth=2.0, path=folders["resnet"])
    ref = ResNetModel.from_pretrained(folders["resnet"])
    for (n, a), (_, b) in zip(enc.net.state_dict().items(), ref.state_dict().items()):
        torch.testing.assert_close(a, b, msg=n)
    feats, tokens = enc(torch.rand(2, 1, 64, 64) * 3)
    assert feats.shape[:2] == (2, 32) and tokens.shape == (2, 9, 12)
    assert tokens.abs().max() == 0  # zero-initialised projection: RGB-only behaviour at the start
    tokens.sum().backward()
    assert enc.proj.weight.grad.abs().sum() > 0


def test_default_resnet_is_resnet50():
    enc = DepthEncoder("resnet", out_dim=8, grid=8, max_depth=2.0)
    c = enc.net.config
    assert list(c.depths) == [3, 4, 6, 3] and c.hidden_sizes[-1] == 2048 and c.layer_type == "bottleneck"
    # torchvision's ResNet-50 without the fc layer has 23 508 032 parameters
    assert sum(p.numel() for p in enc.net.parameters()) == 23_508_032


def test_depth_anything_estimator_matches_direct_call(folders):
    from transformers import DepthAnythingForDepthEstimation

    est = build_estimator(DepthConfig(source="estimated", estimator_path=folders["da"]))
    img = torch.rand(2, 3, 28, 28)
    depth, valid = est(img)
    assert depth.shape == (2, 1, 28, 28) and valid.all()
    ref = DepthAnythingForDepthEstimation.from_pretrained(folders["da"]).eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        pred = ref(pixel_values=(img - mean) / std).predicted_depth[:, None]
    pred = torch.nn.functional.interpolate(pred, size=(28, 28), mode="bilinear", align_corners=False)
    torch.testing.assert_close(depth, pred)
    assert not any(p.requires_grad for p in est.parameters())
    est.train()
    assert est.model.training is False
    with pytest.raises(ValueError, match="estimator-path"):
        build_estimator(DepthConfig(source="estimated"))


def test_store_and_none_estimators():
    est = build_estimator(DepthConfig(source="given"))
    d = torch.rand(2, 1, 8, 8)
    out, valid = est(torch.rand(2, 3, 8, 8), d, torch.tensor([True, False]))
    assert torch.equal(out, d) and valid.tolist() == [True, False]
    out, valid = est(torch.rand(2, 3, 8, 8))
    assert out.abs().sum() == 0 and not valid.any()
    assert build_estimator(DepthConfig(source="none")) is None


def test_paper_random_init_full_size_architecture_on_meta_device():
    """The paper preset at full size (built on the meta device: no memory): GR00T-N1's module sizes."""
    from dataclasses import replace

    from megohand.models import MEgoHandPolicy, PolicyConfig

    c = PolicyConfig.paper()
    with torch.device("meta"):
        p = MEgoHandPolicy(replace(c, backbone=c.backbone.replace(random_init=True)))

    def count(m, trainable=False):
        return sum(x.numel() for x in m.parameters() if x.requires_grad or not trainable)

    vc = p.backbone.vision.config
    assert (vc.hidden_size, vc.num_hidden_layers, vc.patch_size, vc.image_size) == (1152, 27, 14, 224)
    assert p.backbone.image_grid == 8 and p.backbone.image_token_dim == 2048  # 64 tokens x 2048 after mlp1
    assert p.backbone.mlp1[1].in_features == 4608 and len(p.backbone.llm.layers) == 12
    assert count(p.backbone.llm, trainable=True) == 0
    # SmolLM2-1.7B truncated to 12 layers: 12 x (4 x 2048^2 + 3 x 2048 x 8192 + 2 x 2048) + 49152 x 2048 + 2048
    n_llm = 12 * (4 * 2048**2 + 3 * 2048 * 8192 + 2 * 2048) + 49152 * 2048 + 2048
    assert count(p.backbone.llm) >= n_llm  # (+ rows for the added image tokens)
    assert 0.40e9 < count(p.backbone.vision) < 0.42e9  # SigLIP so400m without its pooling head
    assert 0.52e9 < count(p.head.dit) < 0.55e9  # GR00T-N1 DiT 16 x 1536
    assert p.depth_encoder.net.config.hidden_sizes[-1] == 2048 and p.depth_encoder.proj.in_features == 2048


def test_channels_last_depth_encoder_computes_the_same_and_saves_plain(folders, tmp_path):
    from megohand import io

    enc = DepthEncoder("resnet", out_dim=12, grid=3, max_depth=2.0, path=folders["resnet"])
    nn_init = torch.Generator().manual_seed(0)
    torch.nn.init.normal_(enc.proj.weight, generator=nn_init)  # non-zero tokens to compare
    depth = torch.rand(2, 1, 64, 64, generator=nn_init) * 3
    feats, tokens = enc(depth)
    enc.use_channels_last()
    conv = enc.net.embedder.embedder.convolution.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    feats_cl, tokens_cl = enc(depth)
    torch.testing.assert_close(feats_cl, feats, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tokens_cl, tokens, rtol=1e-5, atol=1e-5)
    io.save_safetensors(enc.state_dict(), tmp_path / "w.safetensors")  # safetensors needs plain layouts
    back = io.load_safetensors(tmp_path / "w.safetensors")
    assert all(torch.equal(back[k], v) for k, v in enc.state_dict().items())
    enc.use_channels_last(False)
    assert enc.net.embedder.embedder.convolution.weight.is_contiguous()


def test_eagle_backbone_attends_with_sdpa(folders):
    from megohand.models.backbones import build_backbone

    bb = build_backbone(_eagle_cfg(folders), out_dim=20, use_text=True, use_image=True)
    assert bb.vision.config._attn_implementation == "sdpa" and bb.llm.config._attn_implementation == "sdpa"
