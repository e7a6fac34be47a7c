"""Inference latency of one policy query and closed-loop throughput with TOF.

One query = ``MEgoHandPolicy.predict_chunk`` at batch 1: vision-language backbone + depth encoder on
one frame (depth given, i.e. **without** a monocular depth estimator); bf16 = weights in bf16 under torch.autocast + K Euler steps of the DiT.
Full size = the ``paper`` preset (SigLIP-2 so400m + SmolLM2-1.7B truncated to 12 layers, ResNet-50
depth encoder, DiT 16 x 1536) with random weights. Timed with CUDA events after warm-up, median of
``--iters`` runs; variants ``eager``, ``compiled`` (``policy.compile_inference()``: torch.compile of the flow
head, CUDA graphs) and ``graphed`` (``policy.enable_cuda_graphs()``: the whole query, encode + K Euler steps,
replayed from one CUDA graph; GPU only, run last, failures recorded as ``{"error": ...}``). Closed loop: output
frames per second of a TOF rollout (batch 1) at query strides 1, 2, 4 (each query emits ``stride`` frames).
The result file is rewritten after every variant.

    python benchmarks/latency.py                     # on a GPU: paper preset, bf16
    python benchmarks/latency.py --tiny              # CPU smoke test: tiny random eagle backbone

Prints a table and writes benchmarks/results/latency_<device>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # runs from a checkout without install

from megohand.inference.policy import ModelPolicy  # noqa: E402
from megohand.inference.rollout import rollout  # noqa: E402
from megohand.models import MEgoHandPolicy, PolicyConfig  # noqa: E402
from results_io import write_json  # benchmarks/results_io.py

TEXT = "pick up the red cylinder and put it left of the blue box"


def tiny_config(folder: Path) -> PolicyConfig:
    """The paper preset's architecture at toy size (random SigLIP + Llama + ResNet saved to ``folder``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, ResNetConfig, ResNetModel
    from transformers import SiglipVisionConfig, SiglipVisionModel

    from megohand.models.backbones import bundled_text_path

    SiglipVisionModel(SiglipVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, image_size=56, patch_size=14)).save_pretrained(folder / "vision")
    tok = AutoTokenizer.from_pretrained(bundled_text_path())
    AutoModelForCausalLM.from_config(LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                                                 num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                                                 max_position_embeddings=512)).save_pretrained(folder / "llm")
    tok.save_pretrained(folder / "llm")
    ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 16, 32], depths=[1, 1, 1, 1],
                             layer_type="basic")).save_pretrained(folder / "resnet")
    p = PolicyConfig.paper()
    return dataclasses.replace(
        p,
        backbone=p.backbone.replace(vision_path=folder / "vision", llm_path=folder / "llm", image_size=56,
                                     llm_layers=2),
        depth=dataclasses.replace(p.depth, encoder_path=folder / "resnet", supervision_size=14),
        dit=dataclasses.replace(p.dit, width=64, num_layers=4, num_heads=4, output_dim=64, head_hidden=64),
    )


def full_config() -> PolicyConfig:
    p = PolicyConfig.paper()
    return dataclasses.replace(p, backbone=p.backbone.replace(random_init=True))


class Timer:
    """Wall-clock ms of a callable: CUDA events on a GPU, perf_counter on the CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __call__(self, fn) -> float:
        if self.cuda:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            return a.elapsed_time(b)
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) * 1e3


def measure(fn, timer: Timer, warmup: int, iters: int) -> dict:
    for _ in range(warmup):
        fn()
    ts = [timer(fn) for _ in range(iters)]
    return {"median_ms": statistics.median(ts), "min_ms": min(ts), "max_ms": max(ts), "iters": iters}


@torch.no_grad()
def graph_check(model, image, depth, state, amp) -> dict:
    """The graphed query vs the eager one (``model.sample`` with the plain head) on the same inputs and noise, K = 4."""
    model.eval()
    has_depth = torch.ones(state.shape[0], dtype=torch.bool, device=state.device)
    text = model.prepare_text([TEXT], state.shape[0])
    noise = model.draw_noise(state.shape[0])
    with amp:
        first = model.cuda_graphs(image, text, state, noise, 4, depth, has_depth)  # capture + replay
        again = model.cuda_graphs(image, text, state, noise, 4, depth, has_depth)  # replay
        eager = model.sample(image, text, state, noise, 4, depth, has_depth, head=model.head)
    if first is None:
        return {"graphed": False}
    return {"graphed": True, "max_abs_diff": (again - eager).abs().max().item(),
            "max_abs_eager": eager.abs().max().item(), "replay_equals_first": bool(torch.equal(first, again))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="toy-size paper architecture (CPU smoke test)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, choices=["bf16", "fp32"], help="default bf16 on GPU, fp32 on CPU")
    ap.add_argument("--steps", default="1,2,4,8", help="Euler steps K to time")
    ap.add_argument("--strides", default="1,2,4", help="TOF query strides for the closed-loop throughput")
    ap.add_argument("--rollout-frames", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile (CUDA graphs) variant")
    ap.add_argument("--no-graph", action="store_true", help="skip the whole-query CUDA graph variant")
    ap.add_argument("--device-name", default=None, help="name in the result file (default: cpu or the GPU name)")
    args = ap.parse_args()
    if args.tiny:
        args.iters, args.warmup = min(args.iters, 5), min(args.warmup, 2)
        args.rollout_frames = min(args.rollout_frames, 16)

    device = torch.device(args.device)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    torch.manual_seed(0)
    tmp = tempfile.TemporaryDirectory()
    cfg = tiny_config(Path(tmp.name)) if args.tiny else full_config()
    t0 = time.perf_counter()
    model = MEgoHandPolicy(cfg).to(device=device, dtype=dtype).eval()
    build_s = time.perf_counter() - t0
    n_params = model.num_parameters()
    S = cfg.backbone.image_size
    image = torch.randint(0, 256, (1, 3, S, S), dtype=torch.uint8, device=device)
    depth = torch.rand(1, 1, S, S, device=device) * 1.5 + 0.3
    state = torch.zeros(1, 109, device=device)
    state[:, 0:90] = torch.tensor([1.0, 0, 0, 0, 1, 0], device=device).repeat(15)
    state[:, 100:106] = torch.tensor([1.0, 0, 0, 0, 1, 0], device=device)
    state[:, 106:109] = torch.tensor([0.0, 0.05, 0.45], device=device)
    timer = Timer(device)
    steps = [int(s) for s in args.steps.split(",")]
    strides = [int(s) for s in args.strides.split(",")]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    amp = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()

    def query(K):
        def f():
            with amp:
                model.predict_chunk(image, [TEXT], state, depth, steps=K)
        return f

    def encode_only():
        with torch.no_grad(), amp:
            model.encode(image, [TEXT], depth)

    variants = ["eager"]
    if device.type == "cuda" and not args.no_compile and hasattr(model, "compile_inference"):
        variants.append("compiled")
    if not args.no_graph:
        if device.type == "cuda" and hasattr(model, "enable_cuda_graphs"):
            variants.append("graphed")  # last: a failure there cannot cost the other numbers
        else:
            print("graphed variant skipped (needs CUDA)")
    result = {"query": {}, "encode_ms": None, "closed_loop": {}}
    dev_name = args.device_name or (torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu")
    tag = "cpu" if device.type == "cpu" else dev_name.lower().replace("nvidia ", "").replace(" ", "-")
    path = Path(__file__).resolve().parent / "results" / f"latency_{tag}{'_tiny' if args.tiny else ''}.json"

    def write() -> dict:
        try:
            peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        except Exception:  # noqa: BLE001 - a broken CUDA context must not lose the numbers
            peak = None
        out = {
            "benchmark": "latency",
            "preset": "paper (tiny smoke size)" if args.tiny else "paper (full size, random weights)",
            "device": dev_name,
            "dtype": str(dtype).replace("torch.", ""),
            "batch": 1,
            "parameters": n_params,
            "build_seconds": build_s,
            "depth_estimator": "none (depth given; the monocular estimator is not timed)",
            "peak_memory_gb": peak,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "closed_loop_steps": 4,
            **result,
        }
        write_json(out, path, indent=1)
        return out

    result["encode_ms"] = measure(encode_only, timer, args.warmup, args.iters)["median_ms"]
    for name in variants:
        try:
            if name == "compiled":
                model.compile_inference()
            elif name == "graphed":
                print("graphed: capturing one CUDA graph per K (encode + K Euler steps) ...", flush=True)
                model.enable_cuda_graphs()
                result["graphed_check"] = graph_check(model, image, depth, state, amp)
        except Exception as e:  # noqa: BLE001 - report and keep the other numbers
            result["query"][name] = {"error": repr(e)}
            print(f"{name}: setup failed: {e!r}", flush=True)
            if name == "graphed":
                model.enable_cuda_graphs(False)
            write()
            continue
        try:
            result["query"][name] = {str(K): measure(query(K), timer, args.warmup, args.iters) for K in steps}
            if name == "graphed":
                result["graphed_check"]["replays_after_timing"] = model.cuda_graphs.replays
            policy = ModelPolicy(model, device)
            loop = {}
            for s in strides:
                def run():
                    with amp:
                        return rollout(policy, lambda k: (image, depth), [TEXT], state.float(), args.rollout_frames,
                                       stride=s, tof=True, steps=4)
                run()  # warm-up
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                run()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                dt = time.perf_counter() - t
                loop[str(s)] = {"frames": args.rollout_frames, "seconds": dt, "fps": args.rollout_frames / dt}
            result["closed_loop"][name] = loop
        except Exception as e:  # noqa: BLE001
            if name not in result["query"] or not result["query"][name]:
                result["query"][name] = {"error": repr(e)}
            else:
                result["closed_loop"][name] = {"error": repr(e)}
            print(f"{name}: failed: {e!r}", flush=True)
        finally:
            if name == "graphed":
                model.enable_cuda_graphs(False)
        write()

    out = write()
    print(f"# Latency, {out['preset']}, {dev_name}, {out['dtype']}, batch 1, {n_params / 1e6:.0f} M parameters")
    print(f"vision-language + depth encoding alone: {result['encode_ms']:.2f} ms")
    print("| variant | " + " | ".join(f"K = {K} (ms)" for K in steps) + " | " +
          " | ".join(f"TOF s = {s} (frames/s)" for s in strides) + " |")
    print("|---|" + "---|" * (len(steps) + len(strides)))
    for name, q in result["query"].items():
        if "error" in q:
            print(f"| {name} | error: {q['error']} |")
            continue
        loop = result["closed_loop"].get(name, {})
        print(f"| {name} | " + " | ".join(f"{q[str(K)]['median_ms']:.2f}" for K in steps) + " | " +
              " | ".join(f"{loop[str(s)]['fps']:.1f}" if str(s) in loop else "–" for s in strides) + " |")
    if "graphed_check" in result:
        print(f"graphed vs eager (same noise, K = 4): {result['graphed_check']}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
