"""Fast inference: the split tokenise / tensor path of the backbones, its freedom from host syncs, and the
CUDA-graph query (its CPU fallback, its buffer logic with a replay stand-in, and on a GPU the real graphs)."""

from dataclasses import replace

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from megohand.models.graphs import CUDAGraphQuery
from megohand.inference.policy import ModelPolicy
from megohand.models import MEgoHandPolicy, PolicyConfig
from megohand.models.backbones import build_backbone
from megohand.models.config import BackboneConfig, DiTConfig

from test_models_fixtures import sample_batch, tiny_llm, tiny_resnet, tiny_siglip

torch.set_num_threads(1)
SMALL_DIT = DiTConfig(width=32, num_layers=2, num_heads=4, dropout=0.1, output_dim=32, head_hidden=32)
SAME_LENGTH = ["pick up the cup", "lift up the mug"]  # equal token counts: no padding
DIFFERENT = ["pick up the cup", "open the top drawer slowly please"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    return {"vision": tiny_siglip(d / "v"), "llama": tiny_llm(d / "l"), "qwen2": tiny_llm(d / "q", "qwen2"),
            "resnet": tiny_resnet(d / "r")}


def eagle_policy(folders, **kw):
    c = PolicyConfig.paper()
    cfg = replace(
        c, horizon=4, dit=SMALL_DIT,
        backbone=c.backbone.replace(vision_path=folders["vision"], llm_path=folders["llama"], llm_layers=2),
        depth=replace(c.depth, encoder_path=folders["resnet"], supervision_size=8), **kw,
    )
    torch.manual_seed(0)
    p = MEgoHandPolicy(cfg).eval()
    torch.nn.init.normal_(p.depth_encoder.proj.weight, std=0.1)  # non-zero depth tokens
    return p


def compact_policy():
    c = PolicyConfig.compact()
    torch.manual_seed(0)
    p = MEgoHandPolicy(replace(c, horizon=4, dit=SMALL_DIT,
                               backbone=c.backbone.replace(image_size=32, width=32, fusion_layers=1))).eval()
    torch.nn.init.normal_(p.depth_encoder.proj.weight, std=0.1)
    return p


# ------------------------------------------------------------------ split tokenise / tensor path
@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("instr", [SAME_LENGTH, DIFFERENT])
def test_eagle_split_path_equals_string_path_and_the_masked_scatter_reference(folders, family, instr):
    cfg = BackboneConfig(kind="eagle").replace(vision_path=folders["vision"], llm_path=folders[family], llm_layers=2)
    bb = build_backbone(cfg, out_dim=20, use_text=True, use_image=True).eval()
    img, dt = torch.rand(2, 3, 32, 32), torch.randn(2, 4, 32)
    text = bb.prepare_text(instr, 2, "cpu")
    assert text["padded"] == (instr is DIFFERENT) and text["image_index"].shape == (2, 4)
    with torch.no_grad():
        tokens, mask = bb(img, instr, dt)
        t2, m2 = bb.forward_tokens(img, text, dt)
        # the previous implementation: masked_scatter at <IMG_CONTEXT> and the 2D attention mask always passed
        ids, m = bb.tokenize(instr, "cpu")
        emb = bb.llm.get_input_embeddings()(ids)
        emb = emb.masked_scatter((ids == bb.img_context_id)[..., None], bb.vision_tokens(img) + dt)
        ref = bb.proj(bb.llm(inputs_embeds=emb, attention_mask=m.long()).last_hidden_state)
    assert torch.equal(tokens, t2) and torch.equal(mask, m2) and torch.equal(mask, m)
    torch.testing.assert_close(tokens[mask], ref[mask], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("instr", [SAME_LENGTH, DIFFERENT])
def test_compact_split_path_equals_string_path_and_the_masked_reference(instr):
    bb = build_backbone(BackboneConfig().replace(image_size=32, width=32), out_dim=16, use_text=True, use_image=True).eval()
    img, dt = torch.rand(2, 3, 32, 32), torch.randn(2, 4, 32)
    text = bb.prepare_text(instr, 2, "cpu")
    assert text["padded"] == (instr is DIFFERENT)
    with torch.no_grad():
        tokens, mask = bb(img, instr, dt)
        t2, m2 = bb.forward_tokens(img, text, dt)
        # the previous implementation: every mask passed
        enc = bb.tokenizer(instr, padding=True, return_tensors="pt")
        t = bb.text_proj(bb.text(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state)
        x = bb.vision(img * 2 - 1).flatten(2).transpose(1, 2) + bb.image_pos + dt
        full = torch.cat([t + bb.type_embed.weight[0], x + bb.type_embed.weight[1]], 1)
        m = torch.cat([enc["attention_mask"].bool(), torch.ones(2, 4, dtype=torch.bool)], 1)
        ref = bb.out(bb.fusion(full, src_key_padding_mask=~m))
    assert torch.equal(tokens, t2) and torch.equal(mask, m2) and torch.equal(mask, m)
    torch.testing.assert_close(tokens[mask], ref[mask], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_llm_attention_mask_none_equals_all_ones(folders, family):
    cfg = BackboneConfig(kind="eagle").replace(vision_path=folders["vision"], llm_path=folders[family], llm_layers=2)
    llm = build_backbone(cfg, out_dim=8, use_text=True, use_image=True).eval().llm
    e = torch.randn(2, 7, 32)
    with torch.no_grad():
        a = llm(inputs_embeds=e, attention_mask=torch.ones(2, 7, dtype=torch.long)).last_hidden_state
        b = llm(inputs_embeds=e, attention_mask=None).last_hidden_state
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_minilm_attention_mask_none_equals_all_ones():
    text = build_backbone(BackboneConfig(), out_dim=8, use_text=True, use_image=False).eval().text
    ids = torch.randint(1000, 2000, (2, 6))
    with torch.no_grad():
        a = text(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
        b = text(input_ids=ids, attention_mask=None).last_hidden_state
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------ no host syncs in the graph body
class NoHostSync(TorchDispatchMode):
    """Fails on ops that read device values on the host or have data-dependent shapes (illegal in a capture)."""

    FORBIDDEN = ("_local_scalar_dense", "nonzero", "masked_select", "masked_scatter", "unique", "item", "is_nonzero")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name.lstrip("_") in self.FORBIDDEN or name in self.FORBIDDEN:
            raise AssertionError(f"host sync / data-dependent op in the graph body: {func}")
        return func(*args, **(kwargs or {}))


def _sample_inputs(p, B=2):
    b = sample_batch(B=B, L=4)
    text = p.prepare_text(SAME_LENGTH[:B], B)
    assert not text["padded"]
    return b, text, p.draw_noise(B, torch.Generator().manual_seed(3))


@pytest.mark.parametrize("which", ["eagle", "compact"])
def test_sample_has_no_host_syncs_under_capture(folders, which, monkeypatch):
    p = eagle_policy(folders) if which == "eagle" else compact_policy()
    b, text, noise = _sample_inputs(p)
    has = torch.tensor([True, False])
    with torch.no_grad():
        ref = p.sample(b["image"], text, b["state"], noise, 3, b["depth"], has)
        # transformers checks torch.cuda.is_current_stream_capturing() to skip its host-side mask checks
        monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
        with NoHostSync():
            out = p.sample(b["image"], text, b["state"], noise, 3, b["depth"], has)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(AssertionError, match="host sync"):  # the detector works
        with NoHostSync():
            torch.ones(2).sum().item()


# ------------------------------------------------------------------ the graph wrapper
def test_graph_query_falls_back_to_eager_on_cpu():
    p = compact_policy()
    b = sample_batch(L=4)
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    ref = p.predict_chunk(b["image"], SAME_LENGTH, b["state"], b["depth"], steps=2, generator=g())
    p.compile_inference(mode="graph")
    assert isinstance(p.cuda_graphs, CUDAGraphQuery)
    with pytest.warns(UserWarning, match="not CUDA"):
        out = p.predict_chunk(b["image"], SAME_LENGTH, b["state"], b["depth"], steps=2, generator=g())
    assert torch.equal(out, ref) and p.cuda_graphs.replays == 0 and not p.cuda_graphs.graphs
    p.enable_cuda_graphs(False)
    assert p.cuda_graphs is None


class ReplayStandIn(CUDAGraphQuery):
    """CUDAGraphQuery with the CUDA parts replaced: 'replay' re-runs the recorded body into the static output,
    which exercises the static buffers, the signature keys and the copies on the CPU."""

    class Graph:
        def __init__(self, body):
            self.body = body

        def replay(self):
            self.output.copy_(self.body())

    def unsupported(self, text):
        return "the instruction batch is padded (different token counts)" if text.get("padded") else None

    def warm_up(self, body):
        body()

    def record(self, body):
        graph = self.Graph(body)
        graph.output = torch.full_like(body(), float("nan"))
        return graph, graph.output


@pytest.mark.parametrize("which", ["eagle", "compact"])
def test_graph_query_buffers_keys_and_fallback(folders, which):
    p = eagle_policy(folders) if which == "eagle" else compact_policy()
    b = sample_batch(L=4)
    g = lambda: torch.Generator().manual_seed(7)  # noqa: E731

    def eager(state, instr=SAME_LENGTH, steps=3):
        return p.predict_chunk(b["image"], instr, state, b["depth"], steps=steps, generator=g())

    ref1, ref2, ref_k2 = eager(b["state"]), eager(b["state"] + 0.5), eager(b["state"], steps=2)
    ref_pad = eager(b["state"], DIFFERENT)
    p.__dict__["_graphs"] = ReplayStandIn(p)  # what enable_cuda_graphs() installs, with the CUDA parts replaced
    q = p.cuda_graphs
    out1 = eager(b["state"])
    out2 = eager(b["state"] + 0.5)  # same signature: new values copied into the static buffers
    assert len(q.graphs) == 1 and q.replays == 2
    torch.testing.assert_close(out1, ref1, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out2, ref2, rtol=1e-6, atol=1e-6)
    entry = next(iter(q.graphs.values()))
    assert out2.data_ptr() != entry.output.data_ptr()  # a clone, not the static output
    torch.testing.assert_close(eager(b["state"], steps=2), ref_k2, rtol=1e-6, atol=1e-6)
    assert len(q.graphs) == 2  # K is part of the signature
    with pytest.warns(UserWarning, match="padded"):
        torch.testing.assert_close(eager(b["state"], DIFFERENT), ref_pad, rtol=1e-6, atol=1e-6)
    assert q.replays == 3
    ModelPolicy(p, "cpu")  # a no-op .to keeps the graphs (and the weights' addresses)
    assert len(q.graphs) == 2
    p.to(torch.float64)  # re-allocating the weights drops them
    assert not q.graphs and p.norm.state_lo.dtype == torch.float32


# ------------------------------------------------------------------ real CUDA graphs
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("which,dtype", [("compact", torch.float32), ("eagle", torch.float32),
                                         ("eagle", torch.bfloat16)])
def test_cuda_graphed_query_equals_eager(folders, which, dtype):
    p = (eagle_policy(folders) if which == "eagle" else compact_policy()).to("cuda", dtype)
    b = {k: v.cuda() if torch.is_tensor(v) else v for k, v in sample_batch(L=4).items()}
    amp = torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32)
    g = lambda: torch.Generator("cuda").manual_seed(11)  # noqa: E731

    def chunk(state, generator=None):
        with amp:
            return p.predict_chunk(b["image"], SAME_LENGTH, state, b["depth"], steps=4, generator=generator)

    ref1, ref2 = chunk(b["state"], g()), chunk(b["state"] * 0.5, g())
    p.enable_cuda_graphs()
    out1, out2 = chunk(b["state"], g()), chunk(b["state"] * 0.5, g())
    assert p.cuda_graphs.replays == 2 and len(p.cuda_graphs.graphs) == 1
    tol = dict(rtol=1e-3, atol=1e-3) if dtype == torch.float32 else dict(rtol=5e-2, atol=1e-1)
    torch.testing.assert_close(out1, ref1, **tol)  # kernels may differ (e.g. causal flag vs explicit mask)
    torch.testing.assert_close(out2, ref2, **tol)
    torch.testing.assert_close(chunk(b["state"], g()), out1, rtol=1e-5, atol=1e-5)  # replays repeat themselves
    assert not torch.equal(chunk(b["state"]), chunk(b["state"]))  # default generator: fresh noise per query
