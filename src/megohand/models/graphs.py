"""One policy query (encode + K Euler steps) replayed from a captured CUDA graph.

A query of ``MEgoHandPolicy.predict_chunk`` launches thousands of small kernels (vision tower, LLM, depth
encoder, K DiT passes) at batch 1, so it is bound by the CPU, not the GPU. :class:`CUDAGraphQuery` captures the
tensor part, ``MEgoHandPolicy.sample`` (preprocessing, depth encoder, backbone after tokenisation, cross-attention
K/V, state encoding, K Euler steps, un-normalisation), once per input signature into a ``torch.cuda.CUDAGraph``
and replays it:

    predict_chunk:  tokenise (CPU, cached per string) -> draw noise (caller's generator or the default one)
                    -> copy image, depth, has_depth, state, token ids, noise into the static buffers
                    -> graph.replay() -> clone of the static output (B, L, 99) float32

The noise is a graph input, so a graphed query gives the same chunk as the eager one for the same generator.
Signature (one graph each): the shapes and dtypes of every input, the Python values of the text inputs, K, the
autocast state and the weights' address (``MEgoHandPolicy`` drops its graphs when ``.to`` re-allocates weights).
Eager instead (``None`` returned, noted once per reason): CPU models,
padded instruction batches (the masks would need host checks), calls during another capture.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch


@dataclass
class CapturedQuery:
    """A captured graph with its static input buffers (name -> tensor) and its static output (B, L, 99)."""

    graph: "torch.cuda.CUDAGraph"  # or anything with replay()
    inputs: dict[str, torch.Tensor]
    output: torch.Tensor


class CUDAGraphQuery:
    """``MEgoHandPolicy.sample`` through CUDA graphs; ``__call__`` returns the chunk, or None to run eagerly."""

    def __init__(self, model, warmup: int = 2):
        """model: a MEgoHandPolicy on its final device and dtype; warmup: eager runs (side stream) before capture."""
        self.model = model
        self.warmup = max(1, int(warmup))
        self.graphs: dict[tuple, CapturedQuery] = {}
        self.replays = 0
        self._noted: set[str] = set()

    def clear(self) -> None:
        """Drop every captured graph (their memory pools are released)."""
        self.graphs.clear()

    def _note(self, reason: str) -> None:
        if reason not in self._noted:
            self._noted.add(reason)
            warnings.warn(f"CUDA graphs: {reason}; this query runs eagerly", stacklevel=3)

    def unsupported(self, text: dict) -> str | None:
        """Why a query cannot be graphed (None = it can)."""
        model = self.model
        if model.device.type != "cuda":
            return f"the model is on {model.device.type}, not CUDA"
        if text.get("padded", False):
            return "the instruction batch is padded (different token counts)"
        if torch.cuda.is_current_stream_capturing():
            return "called during another CUDA graph capture"
        return None

    def __call__(self, image, text: dict, state, noise, steps: int, depth=None, has_depth=None):
        """Arguments of ``MEgoHandPolicy.sample`` -> action (B, L, 99) float32 (a fresh tensor), or None."""
        reason = self.unsupported(text)
        if reason is not None:
            self._note(reason)
            return None
        tensors = {"image": image, "depth": depth, "has_depth": has_depth, "state": state, "noise": noise}
        tensors.update({f"text.{k}": v for k, v in text.items() if torch.is_tensor(v)})
        tensors = {k: v for k, v in tensors.items() if v is not None}
        flags = tuple(sorted((k, v) for k, v in text.items() if not torch.is_tensor(v)))
        key = self.key(tensors, flags, steps)
        entry = self.graphs.get(key)
        if entry is None:
            entry = self.capture(tensors, flags, steps)
            self.graphs[key] = entry
        else:
            for name, x in tensors.items():
                entry.inputs[name].copy_(x, non_blocking=True)
        entry.graph.replay()
        self.replays += 1
        return entry.output.clone()

    def key(self, tensors: dict, flags: tuple, steps: int) -> tuple:
        """The signature of a query: one graph per key."""
        model = self.model
        dev = model.device.type
        shapes = tuple((k, tuple(v.shape), v.dtype) for k, v in sorted(tensors.items()))
        amp = (torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev))
        return shapes, flags, int(steps), amp, model.head.W1.weight.data_ptr(), id(model.norm)

    def capture(self, tensors: dict, flags: tuple, steps: int) -> CapturedQuery:
        """Copy the inputs into new static buffers, warm up, capture ``model.sample`` on them."""
        model = self.model
        dev = model.device
        inputs = {k: torch.empty(v.shape, dtype=v.dtype, device=dev) for k, v in tensors.items()}
        for k, v in tensors.items():
            inputs[k].copy_(v)
        text = {k[len("text."):]: v for k, v in inputs.items() if k.startswith("text.")}
        text.update(dict(flags))
        amp_on, amp_dtype = torch.is_autocast_enabled(dev.type), torch.get_autocast_dtype(dev.type)

        def body():
            # cache_enabled=False: autocast's weight-cast cache would outlive the capture (freed on exit).
            with torch.no_grad(), torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_on, cache_enabled=False):
                return model.sample(inputs.get("image"), text, inputs["state"], inputs["noise"], steps,
                                    inputs.get("depth"), inputs.get("has_depth"), head=model.head)

        self.warm_up(body)
        try:
            graph, output = self.record(body)
        except Exception as e:
            raise RuntimeError(
                f"CUDA graph capture of the policy query failed ({type(e).__name__}: {e}); "
                "run eagerly with policy.enable_cuda_graphs(False)"
            ) from e
        return CapturedQuery(graph, inputs, output)

    def warm_up(self, body) -> None:
        """Run ``body`` eagerly ``warmup`` times on a side stream (lazy initialisation, kernel / plan caches)."""
        dev = self.model.device
        side = torch.cuda.Stream(device=dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                body()
        torch.cuda.current_stream(dev).wait_stream(side)

    def record(self, body):
        """Capture ``body`` -> (graph with ``replay()``, its static output)."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            output = body()
        return graph, output
