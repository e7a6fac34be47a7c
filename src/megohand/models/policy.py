"""MEgoHandPolicy: cerebrum (backbone + depth) and cerebellum (DiT flow-matching head) wired together.

Inputs (un-normalised, as WindowDataset yields them, batched): ``image`` uint8 (B, 3, H, W), ``depth`` float (B, 1, H, W)
metres with ``has_depth`` (B,) bool, ``instruction`` list[str], ``state`` (B, 109), ``action`` (B, L, 99),
``action_mask`` (B, L). The policy min-max normalises state and action with the normaliser it carries
(saved beside the weights) and predicts the normalised 99-D relative chunk of ``megohand.hand.vector``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from megohand import io
from megohand.data.observation import ObservationProcessor
from megohand.errors import UserError
from megohand.hand.vector import perturb_start
from megohand.models import flow_matching as fm
from megohand.models.backbones import build_backbone
from megohand.models.config import PolicyConfig
from megohand.models.depth import DepthEncoder, DepthHead, build_estimator, depth_supervision_loss
from megohand.models.dit import ActionHead
from megohand.models.grounding import (GroundingHead, GroundingState, GroundingTokens, ParseHead, QueryGroundingHead,
                                       cell_labels, grounding_loss, parse_loss, teacher_logits)

NOT_SAVED = ("depth_estimator.",)
"""State-dict key prefixes a checkpoint never holds: the frozen external depth estimator (Depth Anything), which
loads from its own folder (``DepthConfig.estimator_path``)."""


def savable(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state_dict`` without the keys under ``NOT_SAVED`` (what ``model.safetensors`` holds)."""
    return {k: v for k, v in state_dict.items() if not k.startswith(NOT_SAVED)}


class MinMax(nn.Module):
    """min_max normalisation y = 2 (x - lo) / (hi - lo) - 1 (dims with hi == lo map to 0) and its inverse,
    on the model's device (the same maps as ``megohand.data.normalize.Normalizer``, tested against it).

    Buffers are not saved in the weights: the normaliser travels as ``normalizer.json``.
    """

    def __init__(self, bounds: dict[str, torch.Tensor]):
        """bounds: state_lo, state_hi (state_dim,), action_lo, action_hi (action_dim,) or, per horizon step,
        (L, action_dim) (broadcast over actions (..., L, action_dim)), clip () (1: clip to [-1, 1])."""
        super().__init__()
        self._src = {k: v.float() for k, v in bounds.items()}
        for name, value in self._src.items():
            self.register_buffer(name, value, persistent=False)

    def _apply(self, fn, recurse=True):
        """Follow device moves but stay float32 (a bf16 model must not round the statistics); a no-op ``.to``
        keeps the buffers (and their addresses, which captured CUDA graphs use)."""
        super()._apply(fn, recurse)
        for name, value in self._src.items():
            buf = self._buffers[name]
            if buf.dtype != torch.float32:
                self._buffers[name] = value.to(buf.device)
        return self

    def _fwd(self, x, lo, hi):
        span = hi - lo
        y = 2 * (x - lo) / torch.where(span > 0, span, torch.ones_like(span)) - 1
        y = torch.where(span > 0, y, torch.zeros_like(y))
        return torch.where(self.clip > 0, y.clamp(-1, 1), y)

    def state(self, x):
        return self._fwd(x, self.state_lo.to(x.dtype), self.state_hi.to(x.dtype))

    def action(self, x):
        return self._fwd(x, self.action_lo.to(x.dtype), self.action_hi.to(x.dtype))

    def unaction(self, y):
        lo, hi = self.action_lo.to(y.dtype), self.action_hi.to(y.dtype)
        return torch.where(hi > lo, (y + 1) * 0.5 * (hi - lo) + lo, lo)


def normalizer_bounds(normalizer, state_dim: int, action_dim: int, horizon: int | None = None) -> dict[str, torch.Tensor]:
    """(lo, hi) float32 per dim of state (state_dim,) and action ((action_dim,), or (L, action_dim) for a per-step
    mode, L = ``horizon`` when given) of a ``megohand.data.normalize.Normalizer`` (identity [-1, 1] when None),
    plus ``clip`` (1 for its q99 modes, which clip to [-1, 1])."""
    if normalizer is None:
        ones_s, ones_a = torch.ones(state_dim), torch.ones(action_dim)
        return {"state_lo": -ones_s, "state_hi": ones_s, "action_lo": -ones_a, "action_hi": ones_a, "clip": torch.zeros(())}
    out = {f"{k}_{b}": torch.as_tensor(getattr(normalizer, b)[k], dtype=torch.float32)
           for k in ("state", "action") for b in ("lo", "hi")}
    mode = getattr(normalizer, "mode", "min_max")
    action_shape = ((horizon or len(out["action_lo"]), action_dim) if mode.endswith("_per_step") else (action_dim,))
    for k, shape in (("state", (state_dim,)), ("action", action_shape)):
        if tuple(out[f"{k}_lo"].shape) != shape:
            raise ValueError(f"normaliser {k} bounds have shape {tuple(out[f'{k}_lo'].shape)}, expected {shape}")
    out["clip"] = torch.tensor(float(mode.startswith("q99")))
    return out


class MEgoHandPolicy(nn.Module):
    """The MEgoHand policy. ``forward(batch) -> (loss, info)``; ``predict_chunk(...) -> (B, L, 99)``."""

    def __init__(self, config: PolicyConfig, normalizer=None, aux_dir: Path | None = None):
        super().__init__()
        if not (config.uses_text or config.uses_image):
            raise ValueError(f"modalities {config.modalities!r} use neither text nor image")
        g = config.grounding
        if config.backbone.augment and (g.weight > 0 or g.parse > 0):
            raise ValueError("--model.backbone.augment crops the image after the grounding and scene-parsing targets "
                             "were placed on it; use the dataset's augmentation (megohand train --augment, on by "
                             "default) with grounding")
        if g.tokens_norm and not g.tokens:
            raise ValueError("--model.grounding.tokens-norm acts on the grounding tokens: it needs "
                             "--model.grounding.tokens")
        if (g.state_dropout > 0 or config.flow.ground_guidance != 1.0) and not g.state:
            raise ValueError("--model.grounding.state-dropout and --model.flow.ground-guidance act on the grounded "
                             "state: they need --model.grounding.state")
        if g.teacher > 0 and not (g.tokens or g.state):
            raise ValueError("--model.grounding.teacher acts on what the action head reads of the grounding head: it "
                             "needs --model.grounding.tokens or --model.grounding.state")
        self.config = config
        self.normalizer = normalizer
        D = config.dit.width
        self.backbone = build_backbone(config.backbone, D, config.uses_text, config.uses_image, aux_dir)
        self.depth_estimator = self.depth_encoder = self.depth_head = None
        if config.uses_depth and config.uses_image:
            dc = config.depth
            self.depth_estimator = build_estimator(dc)
            self.depth_encoder = DepthEncoder(
                dc.encoder, self.backbone.image_token_dim, self.backbone.image_grid, dc.max_depth,
                path=None if aux_dir is not None else dc.encoder_path, aux_dir=aux_dir,
            )
            if dc.supervision:
                self.depth_head = DepthHead(self.depth_encoder.out_channels, dc.supervision_size)
        self.grounding_head = self.grounding_tokens = self.grounding_state = None
        if config.grounding.weight > 0 and config.uses_text and config.uses_image:
            self.grounding_head = QueryGroundingHead(D) if config.grounding.head == "query" else GroundingHead(D)
            if config.grounding.tokens:
                self.grounding_tokens = GroundingTokens(D, config.depth.max_depth, norm=config.grounding.tokens_norm)
            if config.grounding.state:
                self.grounding_state = GroundingState(D, config.dit.head_hidden, config.depth.max_depth)
        self.parse_head = None
        if config.grounding.parse > 0 and config.uses_image:
            from megohand.data.synthetic.scene import COLORS
            from megohand.data.synthetic.shapes import SHAPES

            self.parse_head = ParseHead(D, len(COLORS), len(SHAPES))
        self.head = ActionHead(config.dit, config.state_dim, config.action_dim, config.horizon, context_dim=D)
        self.norm = MinMax(normalizer_bounds(normalizer, config.state_dim, config.action_dim, config.horizon))
        self.__dict__["_head_fn"] = self.head  # plain attribute (not a submodule): the compiled head or the head
        self.__dict__["_graphs"] = None  # a CUDAGraphQuery once enable_cuda_graphs() is called

    # ------------------------------------------------------------------ utilities
    def set_normalizer(self, normalizer) -> None:
        """Replace the normaliser (e.g. after computing statistics); keeps the device."""
        self._drop_graphs()
        device = self.norm.state_lo.device
        self.normalizer = normalizer
        self.norm = MinMax(normalizer_bounds(normalizer, self.config.state_dim, self.config.action_dim,
                                             self.config.horizon)).to(device)

    def _apply(self, fn, recurse=True):
        """``.to`` / ``.cuda`` / ``.half``: captured CUDA graphs are dropped when a weight or buffer is re-allocated
        (they hold its old address); a no-op ``.to`` keeps them."""
        graphs = self.__dict__.get("_graphs")
        if graphs is None or not graphs.graphs:
            return super()._apply(fn, recurse)
        before = [t.data_ptr() for t in (*self.parameters(), *self.buffers())]
        out = super()._apply(fn, recurse)
        if [t.data_ptr() for t in (*self.parameters(), *self.buffers())] != before:
            self._drop_graphs()
        return out

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]

    @property
    def device(self) -> torch.device:
        return self.head.W1.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.head.W1.weight.dtype

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # ------------------------------------------------------------------ observation -> tokens
    def preprocess(self, image: torch.Tensor, depth: torch.Tensor | None):
        """uint8 (B, 3, H, W) [+ depth (B, 1, H, W) m] -> float [0, 1] (B, 3, S, S) [+ depth (B, 1, S, S)], S = image_size.

        Frames not yet at S x S go through ``megohand.data.observation.ObservationProcessor`` (centred square crop,
        the same resampling as training). With ``backbone.augment`` and in training mode, a random 0.95 crop (same
        for depth) and colour jitter (RGB only) follow.
        """
        B = image.shape[0]
        size = self.backbone.image_size
        proc = ObservationProcessor(size)
        x = proc.images(image).to(self.device, non_blocking=True).float() / 255.0
        d = None if depth is None else proc.depths(depth).to(self.device, non_blocking=True).float()
        if self.training and self.config.backbone.augment:
            scale = 0.95
            theta = torch.zeros(B, 2, 3, device=x.device)
            theta[:, 0, 0] = theta[:, 1, 1] = scale
            theta[:, :, 2] = (torch.rand(B, 2, device=x.device) * 2 - 1) * (1 - scale)
            grid = F.affine_grid(theta, (B, 3, size, size), align_corners=False)
            x = color_jitter(F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False))
            if d is not None:
                d = F.grid_sample(d, grid, mode="nearest", align_corners=False)
        return x, d

    def prepare_text(self, instructions, batch: int) -> dict:
        """The CPU part of encode: B instructions (ignored without text) -> the backbone's text inputs on the device
        (``backbone.prepare_text``: token-id tensors, ``mask`` (B, S) bool, ``padded`` bool)."""
        instr = list(instructions) if self.config.uses_text else None
        return self.backbone.prepare_text(instr, batch, self.device)

    def encode(self, image, instructions, depth=None, has_depth=None):
        """Observation -> (vl tokens (B, S, D), mask (B, S) bool, depth features, depth valid (B,), resized store
        depth (B, 1, S, S), grounding logits (B, G^2, 2)); the last four are None where unused."""
        if not self.config.uses_text and image is None:
            raise ValueError("no input modality")
        B = image.shape[0] if image is not None and self.config.uses_image else len(instructions)
        return self.encode_tokens(image, self.prepare_text(instructions, B), depth, has_depth)

    def encode_pixels(self, image, depth=None, has_depth=None) -> dict:
        """The part of encode_tokens that no text changes: {img (B, 3, S, S) preprocessed, d_store, feats, valid,
        d_in, depth_tokens (B, G^2, W), vision (B, G^2, W): the backbone's image tokens, None where they read the
        text (FiLM)}; entries None where unused. A second question about the same pictures (the referring
        question) reuses it instead of running the image and depth encoders again."""
        cfg = self.config
        px = dict(img=None, d_store=None, feats=None, valid=None, d_in=None, depth_tokens=None, vision=None)
        if cfg.uses_image:
            img, px["d_store"] = self.preprocess(image, depth)
            if self.depth_encoder is not None:
                hd = None if has_depth is None else has_depth.to(self.device, non_blocking=True)
                px["d_in"], px["valid"] = self.depth_estimator(img, px["d_store"], hd)
                px["feats"], tokens = self.depth_encoder(px["d_in"])
                px["depth_tokens"] = tokens * px["valid"].to(tokens.dtype)[:, None, None]
            px["img"] = img = img.to(self.dtype)  # bf16 weights without autocast take bf16 images
            if not self.backbone.vision_reads_text:
                px["vision"] = self.backbone.vision_tokens(img)
        return px

    def encode_tokens(self, image, text: dict, depth=None, has_depth=None, ground: bool = False, pixels=None,
                      teacher: tuple | None = None):
        """encode after prepare_text: the tensor part (no host syncs when ``text['padded']`` is False). Also returns
        the grounding logits (B, G^2, 2) when ``ground`` or ``grounding.tokens`` (else None; None without the
        grounding head); with ``grounding.tokens`` their tokens (B, 2, D) end the vision-language tokens.
        ``pixels``: encode_pixels of the same image, depth and has_depth (computed here when None).
        ``teacher``: (uv (B, 2, 2) in [0, 1], use (B, 2) bool) on the device: the grounding tokens of the targets
        marked in ``use`` read these locations instead of the head's (``grounding.teacher``; training only)."""
        px = self.encode_pixels(image, depth, has_depth) if pixels is None else pixels
        vl, mask = self.backbone.forward_tokens(px["img"], text, px["depth_tokens"], vision=px["vision"])
        logits = None
        if self.grounding_head is not None and (ground or self.grounding_tokens is not None
                                                or self.grounding_state is not None):
            logits = self.grounding_head(self.backbone.image_tokens(vl, text), vl, mask)
            if self.grounding_tokens is not None:
                fed = logits if teacher is None else teacher_logits(logits, *teacher, self.config.grounding.sigma)
                vl = torch.cat([vl, self.grounding_tokens(fed, px["d_in"], px["valid"]).to(vl.dtype)], dim=1)
                mask = torch.cat([mask, mask.new_ones(mask.shape[0], logits.shape[-1])], dim=1)
        return vl, mask, px["feats"], px["valid"], px["d_store"], logits

    def grounded_state(self, state_token: torch.Tensor, logits: torch.Tensor | None, pixels: dict,
                       teacher: tuple | None = None, keep: torch.Tensor | None = None) -> torch.Tensor:
        """The state token (B, 1, D) plus, with ``grounding.state``, what ``GroundingState`` reads of the grounding
        logits (B, G^2, 2) (``teacher`` as in ``encode_tokens``); ``pixels`` from encode_pixels (its depth).
        ``keep`` (B,) bool on the device: samples that get it (``grounding.state_dropout``; default all)."""
        if self.grounding_state is None:
            return state_token
        fed = logits if teacher is None else teacher_logits(logits, *teacher, self.config.grounding.sigma)
        add = self.grounding_state(fed, pixels["d_in"], pixels["valid"]).to(state_token.dtype)
        if keep is not None:
            add = add * keep.to(add.dtype)[:, None]
        return state_token + add[:, None]

    # ------------------------------------------------------------------ training
    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Flow-matching loss (+ lambda * depth loss + the grounding loss). Returns (loss, info of detached scalars).

        In training mode, ``config.dropout`` drops each sample's text, image or depth with its probability. With the
        grounding head, ``batch`` may carry ``ground_uv`` (B, 2, 2) in [0, 1] and ``ground_valid`` (B, 2) bool
        (``megohand.data.windows``); samples without text or image are not grounded."""
        cfg = self.config
        dev = self.device
        image, instructions, has_depth = batch["image"], list(batch["instruction"]), batch.get("has_depth")
        B = len(instructions)
        keep_t = keep_i = torch.ones(B, dtype=torch.bool)
        p = cfg.dropout
        if self.training and (p.text > 0 or p.image > 0 or p.depth > 0):
            keep_t, keep_i, keep_d = (torch.rand(B) >= p.text), (torch.rand(B) >= p.image), (torch.rand(B) >= p.depth)
            instructions = [s if k else "" for s, k in zip(instructions, keep_t.tolist())]
            if image is not None and not bool(keep_i.all()):
                image = image * keep_i.to(image.device, image.dtype).view(-1, *([1] * (image.dim() - 1)))
            has = torch.ones(B, dtype=torch.bool) if has_depth is None else has_depth.bool().cpu()
            has_depth = has & keep_d & keep_i
        depth = batch.get("depth") if self.depth_encoder is not None else None
        text = self.prepare_text(instructions, B)
        pixels = self.encode_pixels(image, depth, has_depth)
        teacher = None
        reads = self.grounding_tokens is not None or self.grounding_state is not None
        if self.training and reads and cfg.grounding.teacher > 0 and "ground_uv" in batch:
            use = (batch["ground_valid"].bool().cpu() & (keep_t & keep_i)[:, None]
                   & (torch.rand(B, batch["ground_valid"].shape[1]) < cfg.grounding.teacher))
            teacher = (batch["ground_uv"].to(dev, non_blocking=True), use.to(dev, non_blocking=True))
        vl, mask, feats, valid, d_store, ground_logits = self.encode_tokens(image, text, depth, has_depth, ground=True,
                                                                            pixels=pixels, teacher=teacher)
        # non_blocking: from the DataLoader's pinned memory the copies queue behind the GPU work, no host sync
        state = batch["state"].to(dev, non_blocking=True).float()
        action = batch["action"].to(dev, non_blocking=True).float()
        sn = cfg.state_noise
        if self.training and sn.prob > 0:  # corrective chunks: drawn on the CPU like the dropout, no host sync
            pick = (torch.rand(B) < sn.prob).float()[:, None]
            transl, rot = torch.randn(B, 3) * (sn.transl * pick), torch.randn(B, 3) * (sn.rot * pick)
            with torch.autocast(dev.type, enabled=False):  # 3 x 3 products in float32, not in autocast's bf16
                state, action = perturb_start(state, action, transl.to(dev, non_blocking=True),
                                              rot.to(dev, non_blocking=True))
        state, action = self.norm.state(state), self.norm.action(action)
        B = action.shape[0]
        amask = (batch["action_mask"].to(dev, non_blocking=True).float() if "action_mask" in batch
                 else action.new_ones(action.shape[:2]))
        noise = torch.randn_like(action)
        f = cfg.flow
        tau = fm.sample_tau(B, f.beta_alpha, f.beta_beta, f.noise_s, device=dev)
        x = fm.interpolate(noise, action, tau)
        t = fm.discretise(tau, f.timestep_buckets)
        keep_g = None
        if self.training and self.grounding_state is not None and cfg.grounding.state_dropout > 0:
            keep_g = (torch.rand(B) >= cfg.grounding.state_dropout).to(dev, non_blocking=True)
        state_tok = self.grounded_state(self.head.state_encoder(state)[:, None], ground_logits, pixels, teacher, keep_g)
        v = self.head(state_tok, x, t, vl, mask if cfg.dit.mask_vl_padding else None)
        loss_fm = fm.masked_mse(v, fm.target_velocity(noise, action), amask[..., None])
        info = {"loss_fm": loss_fm.detach()}
        loss = loss_fm
        if self.depth_head is not None and feats is not None and d_store is not None:
            has = (torch.ones(B, dtype=torch.bool, device=dev) if has_depth is None
                   else has_depth.to(dev, non_blocking=True).bool())
            loss_d = depth_supervision_loss(self.depth_head(feats), d_store, has, cfg.depth.max_depth)
            loss = loss + cfg.depth.supervision_weight * loss_d
            info["loss_depth"] = loss_d.detach()
        if self.grounding_head is not None and "ground_uv" in batch:
            ok = batch["ground_valid"].bool().cpu() & (keep_t & keep_i)[:, None]
            loss_g = grounding_loss(ground_logits, batch["ground_uv"].to(dev, non_blocking=True), ok.to(dev, non_blocking=True),
                                    cfg.grounding.sigma)
            loss = loss + cfg.grounding.weight * loss_g
            info["loss_ground"] = loss_g.detach()
        if self.grounding_head is not None and cfg.grounding.refer > 0 and "refer_text" in batch:
            # the same pictures asked for another object by name (only samples whose image was kept)
            ok = torch.as_tensor(batch["refer_valid"]).bool().cpu() & keep_i
            refer = self.prepare_text(list(batch["refer_text"]), B)
            logits = self.encode_tokens(image, refer, depth, has_depth, ground=True, pixels=pixels)[-1]
            loss_r = grounding_loss(logits[..., :1], batch["refer_uv"].to(dev, non_blocking=True)[:, None],
                                    ok.to(dev, non_blocking=True)[:, None], cfg.grounding.sigma)
            loss = loss + cfg.grounding.refer * loss_r
            info["loss_refer"] = loss_r.detach()
        if self.parse_head is not None and "object_attr" in batch:
            # the image tokens of the main pass (the grounding tokens, when present, end the sequence)
            n = vl.shape[1] - (ground_logits.shape[-1] if self.grounding_tokens is not None else 0)
            head = self.parse_head
            attr = batch["object_attr"].to(dev, non_blocking=True)
            labels = cell_labels(batch["object_uv"].to(dev, non_blocking=True), attr, self.backbone.image_grid,
                                 head.colours, head.shapes)
            ok = keep_i.to(dev, non_blocking=True) & (attr[..., 0] >= 0).any(dim=1)  # samples with objects in view
            loss_p = parse_loss(head(self.backbone.image_tokens(vl[:, :n], text)), labels, ok, head.colours)
            loss = loss + cfg.grounding.parse * loss_p
            info["loss_parse"] = loss_p.detach()
        info["loss"] = loss.detach()
        return loss, info

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict_chunk(self, image, instructions, state, depth=None, steps=None, generator=None, has_depth=None,
                      noise_scale: float | None = None, text_guidance: float | None = None):
        """Sample a chunk: image uint8 (B, 3, H, W), instructions list[str], state (B, 109) float,
        depth (B, 1, H, W) m or None -> un-normalised relative action (B, L, 99) float32.

        The initial noise is N(0, I) times ``noise_scale`` (None = ``config.flow.noise_scale``); ``text_guidance``
        w (None = ``config.flow.text_guidance``) != 1 guides the Euler steps on the instruction (``sample``).

        The vision-language tokens and the cross-attention K/V are computed once and reused by the K Euler
        steps (tau = k / K, k = 0..K-1; tau = 1 is data); the loop has no host syncs. The noise comes from
        ``generator`` (any device) or the default generator of the model's device. After
        ``enable_cuda_graphs()`` the tensor part (``sample``) replays a captured CUDA graph where it can.
        """
        was_training = self.training
        self.eval()
        try:
            K = steps or self.config.flow.inference_steps
            B = state.shape[0]
            if depth is not None and has_depth is None:
                has_depth = torch.ones(B, dtype=torch.bool)
            depth = depth if self.depth_encoder is not None else None
            text = self.prepare_text(instructions, B)
            scale = self.config.flow.noise_scale if noise_scale is None else float(noise_scale)
            noise = self.draw_noise(B, generator) * scale
            w = self.config.flow.text_guidance if text_guidance is None else float(text_guidance)
            if w != 1.0 and self.config.uses_text:
                return self.sample(image, text, state, noise, K, depth, has_depth,
                                   null_text=self.prepare_text([""] * B, B), guidance=w)
            if self._graphs is not None:
                out = self._graphs(image, text, state, noise, K, depth, has_depth)
                if out is not None:
                    return out
            return self.sample(image, text, state, noise, K, depth, has_depth)
        finally:
            self.train(was_training)

    def draw_noise(self, batch: int, generator=None) -> torch.Tensor:
        """Initial noise (B, L, action_dim) N(0, 1) in the model's dtype on its device, drawn on the generator's device."""
        shape = (batch, self.config.horizon, self.config.action_dim)
        gen_dev = generator.device if generator is not None else self.device
        return torch.randn(shape, generator=generator, device=gen_dev).to(self.device, self.dtype)

    def sample(self, image, text: dict, state, noise, steps: int, depth=None, has_depth=None, head=None,
               null_text: dict | None = None, guidance: float = 1.0, teacher: tuple | None = None):
        """The tensor part of predict_chunk (eval mode, no grad; no host syncs): observation + text from
        prepare_text + state (B, 109) + noise (B, L, 99) -> un-normalised action (B, L, 99) float32.
        ``head``: the flow head to integrate (default: the compiled one after compile_inference).

        Classifier-free guidance on the instruction (Ho & Salimans, arXiv 2207.12598, applied to the flow's
        velocity): with ``null_text`` (prepare_text of empty strings) each step integrates v0 + guidance (v - v0),
        v0 the velocity of the same pictures, state and x without the instruction, on the steps that start at tau <
        ``config.flow.guidance_until``.
        Guidance on the grounded state (``config.flow.ground_guidance`` w_g != 1, with ``grounding.state``): first
        v = vg0 + w_g (v - vg0), vg0 the velocity of the same context with the plain state token.
        ``teacher``: grounding tokens forced onto given locations (``encode_tokens``; a diagnostic: does the action
        follow them?)."""
        dev, dtype = self.device, self.dtype
        head = self._head_fn if head is None else head
        B = state.shape[0]
        pixels = self.encode_pixels(image, depth, has_depth)
        state_tok = self.head.state_encoder(self.norm.state(state.to(dev).float()).to(dtype))[:, None]
        buckets = self.config.flow.timestep_buckets

        def context(prepared: dict):
            vl, mask, *_, logits = self.encode_tokens(image, prepared, depth, has_depth, pixels=pixels, teacher=teacher)
            vl = vl.to(dtype)
            return (self.head.dit.context_kv(vl), mask if self.config.dit.mask_vl_padding else None,
                    self.grounded_state(state_tok, logits, pixels, teacher))

        kv, mask, query = context(text)
        null = context(null_text) if null_text is not None and guidance != 1.0 else None
        until = self.config.flow.guidance_until
        wg = self.config.flow.ground_guidance if self.grounding_state is not None else 1.0

        def velocity(x, tau: float):
            t = torch.full((B,), int(tau * buckets), device=dev, dtype=torch.long)
            v = head(query, x, t, None, mask, kv)
            if tau >= until:
                return v
            if wg != 1.0:  # guidance on the grounded state: against the same context without the head's answer
                vg0 = head(state_tok, x, t, None, mask, kv)
                v = vg0 + wg * (v - vg0)
            if null is None:
                return v
            v0 = head(null[2], x, t, None, null[1], null[0])
            return v0 + guidance * (v - v0)

        x = fm.euler_integrate(velocity, noise.to(dev, dtype), steps)
        return self.norm.unaction(x.float())

    def compile_inference(self, mode: str = "reduce-overhead") -> None:
        """Speed up predict_chunk. ``mode="graph"``: capture the whole query (encode + K Euler steps) in CUDA graphs
        (``enable_cuda_graphs``); any other mode: torch.compile the flow head (CUDA graphs with reduce-overhead)."""
        if mode == "graph":
            self.enable_cuda_graphs()
            return
        self.__dict__["_head_fn"] = torch.compile(self.head, mode=mode, dynamic=False)

    def compile_training(self, **options) -> list[str]:
        """torch.compile, in place, each block of the policy's repeated layer stacks (every ``nn.ModuleList`` of two
        or more modules that is not inside another: vision and LLM layers, DiT blocks, depth-encoder stages; never
        the frozen depth estimator). Regional compilation: the layers of one stack share their compiled code, so the
        cold start is a few graphs rather than the whole model, the tokenizer and the Python around the stacks stay
        eager, and the state-dict keys do not change (checkpoints load either way). ``options`` go to
        ``torch.compile``. Returns the names of the compiled stacks."""
        import torch._dynamo

        # the compiled calls of all blocks share one code object: room for every stack's variants (train/eval,
        # text lengths, cross/self-attention) before dynamo would fall back to eager
        dyn = torch._dynamo.config
        limit = "recompile_limit" if hasattr(dyn, "recompile_limit") else "cache_size_limit"
        setattr(dyn, limit, max(getattr(dyn, limit), 64))
        stacks: list[str] = []
        for name, module in self.named_modules():
            inside = any(name.startswith(s + ".") for s in stacks)
            if inside or name.startswith(NOT_SAVED) or not isinstance(module, nn.ModuleList) or len(module) < 2:
                continue
            for block in module:
                block.compile(**options)
            stacks.append(name)
        return stacks

    def enable_cuda_graphs(self, enabled: bool = True, warmup: int = 2) -> None:
        """Make predict_chunk replay one CUDA graph per input signature (``megohand.models.graphs``); eager on the
        CPU and for padded instruction batches. Captured graphs are dropped when the weights move (``.to``)."""
        self._drop_graphs()
        if enabled:
            from megohand.models.graphs import CUDAGraphQuery

            self.__dict__["_graphs"] = CUDAGraphQuery(self, warmup=warmup)
        else:
            self.__dict__["_graphs"] = None

    @property
    def cuda_graphs(self):
        """The CUDAGraphQuery used by predict_chunk, or None."""
        return self.__dict__.get("_graphs")

    def _drop_graphs(self) -> None:
        graphs = self.__dict__.get("_graphs")
        if graphs is not None:
            graphs.clear()

    # ------------------------------------------------------------------ persistence
    def weights_state_dict(self) -> dict[str, torch.Tensor]:
        """State dict without the frozen external depth estimator (it loads from its own folder)."""
        return savable(self.state_dict())

    def export_aux(self, aux: Path) -> None:
        """Let the backbone and the depth encoder put their auxiliary files (tokenizer, configs) into ``aux``."""
        if hasattr(self.backbone, "export"):
            self.backbone.export(aux)
        if self.depth_encoder is not None:
            self.depth_encoder.export(aux)

    def write_files(self, folder: str | Path, state_dict: dict | None = None) -> None:
        """Write the checkpoint files (``megohand.io``'s format) into an existing folder."""
        io.write_checkpoint_files(folder, state_dict if state_dict is not None else self.weights_state_dict(),
                                  self.config.to_dict(), None if self.normalizer is None else self.normalizer.to_dict(),
                                  self.export_aux)

    def save_pretrained(self, directory: str | Path, state_dict: dict | None = None) -> Path:
        """Write model.safetensors + config.json + normalizer.json + aux/ atomically (``megohand.io.write_checkpoint``)."""
        return io.write_checkpoint(directory, state_dict if state_dict is not None else self.weights_state_dict(),
                                   self.config.to_dict(), None if self.normalizer is None else self.normalizer.to_dict(),
                                   self.export_aux)

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> "MEgoHandPolicy":
        """Rebuild from a save_pretrained folder (no user weight folders needed, except a Depth Anything estimator)."""
        directory = Path(directory)
        policy = cls(*checkpoint_config(directory), aux_dir=directory / io.AUX)
        policy.load_weights(directory / io.WEIGHTS)
        return policy.to(map_location)

    def load_weights(self, path: str | Path, ignore: tuple[str, ...] = NOT_SAVED) -> None:
        """Load a model.safetensors written by save_pretrained (cast to this model's dtypes); keys starting with
        ``ignore`` may be absent (the external depth estimator; the weights a slim checkpoint rebuilds)."""
        missing, unexpected = self.load_state_dict(io.load_safetensors(path), strict=False)
        missing = [k for k in missing if not k.startswith(ignore)]
        if missing or unexpected:
            raise UserError(f"missing keys {missing[:5]}, unexpected keys {unexpected[:5]}", path=path,
                            hint="the weights do not belong to this config.json")


def checkpoint_config(directory: str | Path):
    """``(PolicyConfig, Normalizer | None)`` of a checkpoint folder; bad files raise UserError naming them."""
    from megohand.data.normalize import Normalizer

    config, norm = io.read_checkpoint(directory)
    try:
        return PolicyConfig.from_dict(config), None if norm is None else Normalizer.from_dict(norm)
    except (ValueError, TypeError, KeyError) as e:
        raise UserError(f"does not describe a megohand policy ({type(e).__name__}: {e})", path=directory,
                        hint="the checkpoint was written by another version or edited") from None


def color_jitter(x: torch.Tensor, brightness=0.3, contrast=0.4, saturation=0.5) -> torch.Tensor:
    """Per-sample brightness, contrast and saturation jitter of x (B, 3, H, W) in [0, 1] (GR00T's ranges, no hue)."""
    B = x.shape[0]

    def factor(r):
        return (1 + (torch.rand(B, 1, 1, 1, device=x.device) * 2 - 1) * r)

    x = x * factor(brightness)
    gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    x = (x - gray.mean(dim=(2, 3), keepdim=True)) * factor(contrast) + gray.mean(dim=(2, 3), keepdim=True)
    gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    x = (x - gray) * factor(saturation) + gray
    return x.clamp(0, 1)
