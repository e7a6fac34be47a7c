"""Depth for the cerebrum: estimators (where depth comes from), encoders (depth -> tokens added to the
image tokens) and the auxiliary depth-supervision head (arXiv 2505.16602, the cerebrum; what the paper leaves open and the
choice made here: docs/model.md).

Depth maps are (B, 1, H, W) float metres; ``valid`` (B,) bool says which samples have depth.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------- estimators
class GivenDepth(nn.Module):
    """The depth given with the observation (``batch["depth"]``, ``batch["has_depth"]``): stored sensor, rendered or
    estimated depth in training and eval, the user's depth in ``megohand generate``."""

    def forward(self, image, depth=None, has_depth=None):
        """image (B, 3, H, W) float [0, 1] -> (depth (B, 1, H, W) m, valid (B,) bool)."""
        B, _, H, W = image.shape
        if depth is None:
            return image.new_zeros(B, 1, H, W), torch.zeros(B, dtype=torch.bool, device=image.device)
        valid = torch.ones(B, dtype=torch.bool, device=image.device) if has_depth is None else has_depth.bool()
        return depth.float(), valid


class DepthAnythingEstimator(nn.Module):
    """Frozen Depth Anything (V2) from a local folder (transformers DepthAnythingForDepthEstimation).

    Metric checkpoints output metres; relative ones output inverse depth, which is min-max scaled per
    image to [0, max_depth] (near = small), a rough stand-in flagged by ``metric=False``.
    """

    def __init__(self, path: Path, metric: bool = True, max_depth: float = 2.0, size: int | None = None):
        super().__init__()
        from transformers import DepthAnythingForDepthEstimation

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"Depth Anything folder {path} has no config.json")
        self.model = DepthAnythingForDepthEstimation.from_pretrained(path).eval().requires_grad_(False)
        self.metric, self.max_depth = metric, max_depth
        self.size = size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.model.eval()  # frozen modules stay in eval mode
        return self

    @torch.no_grad()
    def forward(self, image, depth=None, has_depth=None):
        """image (B, 3, H, W) float [0, 1] -> (depth (B, 1, H, W) m, valid all True)."""
        B, _, H, W = image.shape
        patch = self.model.config.patch_size
        side = self.size or max(H, W)
        side = -(-side // patch) * patch
        x = F.interpolate(image.float(), size=(side, side), mode="bilinear", align_corners=False)
        x = (x - self.mean) / self.std
        pred = self.model(pixel_values=x.to(next(self.model.parameters()).dtype)).predicted_depth.float()
        pred = F.interpolate(pred[:, None], size=(H, W), mode="bilinear", align_corners=False)
        if not self.metric:
            lo = pred.amin(dim=(2, 3), keepdim=True)
            hi = pred.amax(dim=(2, 3), keepdim=True)
            pred = self.max_depth * (1 - (pred - lo) / (hi - lo).clamp_min(1e-6))
        return pred, torch.ones(B, dtype=torch.bool, device=image.device)


def build_estimator(cfg) -> nn.Module | None:
    """DepthConfig -> the module that supplies the policy's depth (``cfg.source``), or None for 'none'."""
    if cfg.source == "none":
        return None
    if cfg.source == "given":
        return GivenDepth()
    if cfg.source == "estimated":
        if cfg.estimator_path is None:
            raise ValueError("depth.source=estimated needs --model.depth.estimator-path (a local folder)")
        return DepthAnythingEstimator(cfg.estimator_path, cfg.estimator_metric, cfg.max_depth)
    raise ValueError(f"unknown depth source {cfg.source!r}")


# ---------------------------------------------------------------- encoders
def normalise_depth(depth: torch.Tensor, max_depth: float) -> torch.Tensor:
    """Metres -> [-1, 1] after clipping to [0, max_depth]."""
    return depth.clamp(0, max_depth) * (2.0 / max_depth) - 1.0


class SmallCNN(nn.Module):
    """Strided conv stack: (B, C_in, H, W) -> (B, width, H / 2^n, W / 2^n) with GroupNorm + GELU.

    With ``cond_dim``, FiLM (Perez et al. 2018, the sentence conditioning of RT-1's image encoder): a condition
    (B, cond_dim) scales and shifts every stage after its GroupNorm, x * (1 + gamma) + beta; the maps start at zero,
    so training starts from the unconditioned network."""

    def __init__(self, in_ch: int, width: int, num_down: int = 4, cond_dim: int = 0):
        super().__init__()
        chans = [in_ch] + [max(width // 2 ** (num_down - 1 - i), 16) for i in range(num_down)]
        layers = []
        for i in range(num_down):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1), nn.GroupNorm(8, chans[i + 1]), nn.GELU()]
        layers.append(nn.Conv2d(chans[-1], width, 1))
        self.net = nn.Sequential(*layers)
        self.out_channels = width
        self.film = None
        if cond_dim:
            self.film = nn.ModuleList(nn.Linear(cond_dim, 2 * c) for c in chans[1:])
            for lin in self.film:
                nn.init.zeros_(lin.weight)
                nn.init.zeros_(lin.bias)

    def forward(self, x, cond: torch.Tensor | None = None):
        """x (B, C_in, H, W), cond (B, cond_dim) (only and always with ``cond_dim``) -> (B, width, h, w)."""
        if self.film is None:
            return self.net(x)
        if cond is None:
            raise ValueError("this SmallCNN is FiLM-conditioned: pass cond (B, cond_dim)")
        layers = list(self.net)
        for i, film in enumerate(self.film):
            conv, norm, act = layers[3 * i: 3 * i + 3]
            gamma, beta = film(cond)[:, :, None, None].chunk(2, dim=1)
            x = act(norm(conv(x)) * (1 + gamma) + beta)
        return layers[-1](x)


class DepthEncoder(nn.Module):
    """Depth (B, 1, H, W) m -> (features (B, C, h, w), tokens (B, grid^2, out_dim)).

    The token projection is zero-initialised, so adding the tokens to the image tokens starts from RGB-only
    behaviour (docs/model.md). ``kind``: ``resnet`` (transformers ResNetModel, 1 channel repeated to 3; ResNet-50
    random unless ``path`` names a local checkpoint) or ``cnn`` (small CNN).
    """

    def __init__(
        self, kind: str, out_dim: int, grid: int, max_depth: float, path: Path | None = None, aux_dir: Path | None = None
    ):
        super().__init__()
        self.kind, self.grid, self.max_depth = kind, grid, max_depth
        if kind == "resnet":
            from transformers import ResNetConfig, ResNetModel

            if aux_dir is not None:  # rebuild from a checkpoint; weights come from its safetensors
                self.net = ResNetModel(ResNetConfig.from_pretrained(aux_dir / "resnet"))
            elif path is not None:
                if not (Path(path) / "config.json").is_file():
                    raise FileNotFoundError(f"ResNet folder {path} has no config.json")
                self.net = ResNetModel.from_pretrained(path)
            else:
                self.net = ResNetModel(ResNetConfig())  # ResNet-50 layout, random weights
            channels = self.net.config.hidden_sizes[-1]
        elif kind == "cnn":
            self.net = SmallCNN(1, out_dim, num_down=4)
            channels = out_dim
        else:
            raise ValueError(f"unknown depth encoder {kind!r}")
        self.out_channels = channels
        self.proj = nn.Linear(channels, out_dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.memory_format = torch.contiguous_format

    def use_channels_last(self, enabled: bool = True) -> None:
        """Keep the convolution weights and inputs channels-last (NHWC, the layout of cuDNN's bf16 tensor-core
        kernels) or back in the default layout. Values and state-dict keys are unchanged (checkpoints are written
        contiguous)."""
        self.memory_format = torch.channels_last if enabled else torch.contiguous_format
        self.net.to(memory_format=self.memory_format)

    def export(self, folder: Path) -> None:
        if self.kind == "resnet":
            self.net.config.save_pretrained(folder / "resnet")

    def forward(self, depth: torch.Tensor):
        """depth (B, 1, H, W) m -> (features (B, C, h, w), tokens (B, grid^2, out_dim))."""
        x = normalise_depth(depth.float(), self.max_depth).to(self.proj.weight.dtype)
        if self.kind == "resnet":
            x = x.expand(-1, 3, -1, -1).contiguous(memory_format=self.memory_format)
            feats = self.net(pixel_values=x).last_hidden_state
        else:
            feats = self.net(x.contiguous(memory_format=self.memory_format))
        pooled = F.adaptive_avg_pool2d(feats, self.grid)
        return feats, self.proj(pooled.flatten(2).transpose(1, 2))


class DepthHead(nn.Module):
    """Depth-supervision decoder: features (B, C, h, w) -> depth (B, 1, size, size) m.

    Three 3x3 conv blocks; each doubles the resolution first while it is below ``size`` (paper preset: 7 -> 14 ->
    28 -> 56; compact: 8 -> 16 -> 32 -> 32), so no block runs at a finer grid than the loss is taken on.
    """

    def __init__(self, in_ch: int, size: int, width: int = 64):
        super().__init__()
        self.size = size
        self.inp = nn.Conv2d(in_ch, width, 1)
        self.up = nn.ModuleList(
            nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.GELU()) for _ in range(3)
        )
        self.out = nn.Conv2d(width, 1, 3, padding=1)

    def forward(self, feats):
        x = self.inp(feats)
        for blk in self.up:
            if max(x.shape[-2:]) < self.size:
                x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
            x = blk(x)
        x = self.out(x)
        if x.shape[-2:] == (self.size, self.size):
            return x
        return F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)


def depth_supervision_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, max_depth: float):
    """Masked MSE between pred (B, 1, s, s) and target depth (B, 1, H, W) m clipped to [0, max_depth].

    Pixels with target <= 0 (missing) and samples with valid False are ignored; returns 0 if none is left.
    """
    tgt = F.interpolate(target.float(), size=pred.shape[-2:], mode="nearest")
    mask = (tgt > 0) & valid.view(-1, 1, 1, 1)
    tgt = tgt.clamp(0, max_depth)
    err = (pred.float() - tgt) ** 2 * mask
    return err.sum() / mask.sum().clamp_min(1)
