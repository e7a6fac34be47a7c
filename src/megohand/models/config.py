"""Policy configuration: frozen dataclasses with two presets, ``paper`` and ``compact``.

Every field is a command-line override through tyro (``megohand train model:paper --model.dit.num-layers 8``).
``PolicyConfig.to_dict()/from_dict()`` round-trip through the checkpoint's ``config.json``.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import tyro

Modalities = Literal["T", "V", "TI", "TID"]

SYSTEM_PROMPT = (
    "Given the initial token, generate a sequence of motion tokens semantically aligned with the "
    "following hand motion description."
)


@dataclass(frozen=True)
class CompactBackboneConfig:
    """The compact backbone: MiniLM text encoder + small CNN vision encoder + fusion transformer."""

    text_path: Path | None = None
    """compact: sentence-transformers/BERT folder for the text encoder; None = the bundled MiniLM."""
    tune_text: bool = False
    """compact: train the text encoder (frozen by default)."""
    max_text_tokens: int = 32
    """compact: instruction tokens kept by the text encoder (longer instructions are truncated)."""
    width: int = 256
    """compact: width of the vision encoder and fusion transformer."""
    fusion_layers: int = 2
    """compact: layers of the fusion transformer."""
    fusion_heads: int = 4
    """compact: heads of the fusion transformer."""
    film: bool = False
    """compact: condition the vision CNN on the instruction (FiLM from the mean text token, as RT-1 does), so the
    pixels are read for what the sentence asks (with text and image only)."""


@dataclass(frozen=True)
class EagleBackboneConfig:
    """The eagle (paper) backbone: SigLIP + pixel shuffle + truncated decoder LLM (GR00T-N1's Eagle-2)."""

    vision_path: Path | None = None
    """eagle: local SigLIP/SigLIP-2 folder (SiglipVisionModel or SiglipModel checkpoint)."""
    llm_path: Path | None = None
    """eagle: local decoder-LLM folder (SmolLM2/Llama or Qwen2) with its tokenizer."""
    random_init: bool = False
    """eagle: build the full-size architecture from configs with random weights (benchmarks only)."""
    llm_layers: int = 12
    """eagle: keep the first N decoder layers (GR00T select_layer)."""
    tune_llm: bool = False
    """eagle: train the LLM (frozen in the paper)."""
    tune_visual: bool = True
    """eagle: train the vision tower and mlp1."""
    lora_rank: int = 0
    """eagle: LoRA rank on the LLM q/k/v projections (0 = off; needs peft)."""
    lora_alpha: int = 16
    """eagle: LoRA alpha."""
    lora_dropout: float = 0.1
    """eagle: LoRA dropout."""
    system_prompt: str = SYSTEM_PROMPT
    """eagle: system message of the ChatML prompt."""
    text_pad_multiple: int = 0
    """eagle: right-pad every batch's prompts to a multiple of this many tokens (0: to the batch's longest). Each new
    prompt length is a new input shape: compiled blocks replayed as CUDA graphs (``--compile-mode reduce-overhead``)
    record their graphs again for it; buckets of 16 or 32 bound how many lengths occur. The padding is masked in the
    LLM, and in the DiT where ``dit.mask_vl_padding`` is on (then the prediction does not change)."""


@dataclass(frozen=True)
class BackboneConfig:
    """Cerebrum (vision-language backbone): the fields every kind uses, then one settings block per kind (only
    the block named by ``kind`` is read). On the command line the blocks' options sit directly under
    ``--model.backbone.`` (their names do not collide); their help says which kind reads them."""

    kind: Literal["compact", "eagle"] = "compact"
    """compact: MiniLM text + small CNN vision + fusion transformer; eagle: SigLIP + pixel shuffle + truncated LLM."""
    image_size: int = 128
    """Square input side [px] after resizing."""
    augment: bool = False
    """GPU-side training augmentation (random crop 0.95, colour jitter; depth only cropped). Off by default:
    WindowDataset(augment=True) already does it on the CPU."""
    compact: Annotated[CompactBackboneConfig, tyro.conf.arg(name="")] = CompactBackboneConfig()
    """Settings of the compact backbone."""
    eagle: Annotated[EagleBackboneConfig, tyro.conf.arg(name="")] = EagleBackboneConfig()
    """Settings of the eagle backbone."""

    def replace(self, **changes) -> "BackboneConfig":
        """``dataclasses.replace`` that also takes the kind blocks' fields by name:
        ``cfg.replace(image_size=64, width=64)`` sets ``image_size`` and ``compact.width``."""
        return dataclasses.replace(self, **_route(changes, self))

    @staticmethod
    def upgrade(d: dict) -> dict:
        """A backbone dict as the config.json of earlier versions held it (every field flat) -> the current
        nesting (``{"kind", "image_size", "augment", "compact": {...}, "eagle": {...}}``); current dicts pass."""
        return _route(dict(d))


_BLOCKS = {"compact": CompactBackboneConfig, "eagle": EagleBackboneConfig}


def _route(changes: dict, base: BackboneConfig | None = None) -> dict:
    """Move the kind blocks' fields of ``changes`` into their blocks (replaced in ``base``'s blocks, or as dicts)."""
    for block, cls in _BLOCKS.items():
        own = {f.name: changes.pop(f.name) for f in dataclasses.fields(cls) if f.name in changes}
        if own and base is not None:
            changes[block] = dataclasses.replace(getattr(base, block), **own)
        elif own:
            changes[block] = {**changes.get(block, {}), **own}
    return changes


@dataclass(frozen=True)
class DepthConfig:
    """Depth estimator, depth encoder and depth supervision."""

    source: Literal["given", "estimated", "none"] = "given"
    """Where the policy's depth comes from (docs/data_format.md, "Depth: one vocabulary"): given = the depth that
    comes with the observation (the store's depth in training and eval, ``--depth`` in generate); estimated = a
    frozen monocular estimator run on the image (--model.depth.estimator-path); none = no depth."""
    estimator_path: Path | None = None
    """Local DepthAnythingForDepthEstimation folder (for source=estimated)."""
    estimator_metric: bool = True
    """The estimator outputs metres (metric checkpoints); else its relative output is min-max scaled to [0, max_depth]."""
    encoder: Literal["resnet", "cnn"] = "cnn"
    """resnet = transformers ResNetModel (ResNet-50 by default); cnn = small CNN."""
    encoder_path: Path | None = None
    """Local ResNet weights folder; None = random initialisation."""
    max_depth: float = 2.0
    """Depth clip [m] for the encoder input and the supervision target."""
    supervision: bool = True
    """Auxiliary depth-supervision loss (decoder on the depth-encoder features, MSE to store depth)."""
    supervision_weight: float = 1.0
    """Weight lambda of the depth-supervision loss."""
    supervision_size: int = 32
    """Side [px] of the supervised depth map."""

    @staticmethod
    def upgrade(d: dict) -> dict:
        """A depth dict of an earlier config.json (``estimator``: store / depth_anything / none) -> the current
        names (``source``: given / estimated / none); current dicts pass unchanged."""
        d = dict(d)
        if "estimator" in d:
            old = d.pop("estimator")
            d["source"] = {"store": "given", "depth_anything": "estimated"}.get(old, old)
        return d


@dataclass(frozen=True)
class DiTConfig:
    """Cerebellum (DiT + encoders/decoder)."""

    width: int = 256
    """Token width D = heads x head dim."""
    num_layers: int = 6
    """Blocks (even = cross-attention, odd = self-attention)."""
    num_heads: int = 8
    """Attention heads."""
    dropout: float = 0.1
    """Dropout on attention outputs and feed-forward."""
    ff_mult: int = 4
    """Feed-forward inner width / D."""
    output_dim: int = 256
    """Width of the DiT output projection (decoder input)."""
    head_hidden: int = 256
    """Hidden width of the state encoder and action decoder MLPs."""
    timestep_dim: int = 256
    """Sinusoid width of the DiT time embedding."""
    max_positions: int = 1024
    """Size of the learned positional embedding of action tokens."""
    mask_vl_padding: bool = True
    """Mask padded vision-language tokens in cross-attention (GR00T-N1 does not)."""


@dataclass(frozen=True)
class FlowConfig:
    """Flow matching (GR00T-N1 convention, tau = 1 is data)."""

    beta_alpha: float = 1.5
    """Alpha of the Beta time distribution."""
    beta_beta: float = 1.0
    """Beta of the Beta time distribution."""
    noise_s: float = 0.999
    """s in tau = (s - u) / s."""
    timestep_buckets: int = 1000
    """Time discretisation int(tau * buckets)."""
    inference_steps: int = 4
    """Euler steps K at inference."""
    noise_scale: float = 1.0
    """Scale of the initial noise at inference (1 = the trained N(0, I) prior; 0 = the one deterministic path from
    the noise mean, a central sample: lower per-window error and jitter, no diversity)."""
    text_guidance: float = 1.0
    """Classifier-free guidance on the instruction at inference: velocity v0 + w (v - v0), v0 with empty text (what
    text dropout, ``dropout.text`` > 0, trains). 1 = no guidance (one pass); w > 1 costs a second flow-head pass."""
    ground_guidance: float = 1.0
    """Guidance on the grounded state (``grounding.state``) at inference: velocity v0 + w (v - v0), v0 without the
    grounding head's answer in the state token (what ``grounding.state_dropout`` > 0 trains). 1 = none."""
    guidance_until: float = 1.0
    """Guidance acts on the Euler steps that start at tau < this (1 = every step; 0.5 = the first half, where the
    chunk's coarse course is decided; later steps integrate the plain velocity)."""


@dataclass(frozen=True)
class GroundingConfig:
    """Auxiliary grounding supervision: from the vision-language tokens at the image positions, predict where the
    instructed object and its destination are in the picture (a distribution over the image-token grid, soft
    cross-entropy to a Gaussian around each projected centre; targets from the store's scene facts). Like the
    paper's depth supervision, it shapes the cerebrum; inference ignores the head unless ``tokens``."""

    weight: float = 0.0
    """Loss weight (0 = off, no head is built)."""
    sigma: float = 0.75
    """Standard deviation of the target Gaussian [image-token cells]."""
    tokens: bool = False
    """Also feed the head's answer to the action head: one token per target (expected location, depth there,
    peak probability; ``megohand.models.grounding.GroundingTokens``), appended to the vision-language tokens.
    Then inference runs the head too."""
    tokens_norm: bool = False
    """With ``tokens``: a LayerNorm on them. The action head reads its context unnormalised, and the trained tokens
    were about 8 times smaller than the other vision-language tokens (norm 1.2 against 10)."""
    state: bool = False
    """Also feed the head's answer to the action head through its state token: the same numbers as ``tokens``, of both
    targets, through a small MLP (last layer zero at the start) added to the encoded state
    (``megohand.models.grounding.GroundingState``). Then inference runs the head too."""
    state_dropout: float = 0.0
    """With ``state``: probability per training sample that the state token goes without the head's answer, so that
    the action head also learns the velocity without it (the null condition of ``flow.ground_guidance``)."""
    teacher: float = 0.0
    """With ``tokens`` or ``state``: probability per training sample and target that what the action head reads of the
    head's answer carries the ground-truth location instead (the head's training target,
    ``megohand.models.grounding.teacher_logits``; teacher forcing). Trained on the head's answers alone, the action
    head learned to ignore the tokens (forced onto another object, no more chunks ended there than unforced);
    inference always reads the head's answer."""
    head: Literal["linear", "query"] = "linear"
    """``linear``: a linear map of each image token (``GroundingHead``); ``query``: each image token matched against
    a query pooled from the vision-language tokens, the instruction's among them (``QueryGroundingHead``)."""
    parse: float = 0.0
    """Weight of scene parsing (0 = off): every image token also says the colour and shape of the object whose
    centre is within one token cell of it, or none (``megohand.models.grounding.ParseHead``; targets from the
    synthetic world's scene facts, ``object_*`` of ``megohand.data.windows``)."""
    refer: float = 0.0
    """Weight of the referring question (0 = off): a second pass of the cerebrum on the same picture with the text
    "the <colour> <shape>" of a random object in it, and the same loss on where that object is. The hand's motion
    often shows which object is instructed; this question only colour and shape answer (``refer_*`` of
    ``megohand.data.windows``)."""


@dataclass(frozen=True)
class ModalityDropoutConfig:
    """Training-time modality dropout (per sample): the instruction becomes empty text, the image black, the depth
    missing. Saved in the checkpoint's config; inference never drops."""

    text: float = 0.0
    """Probability of dropping the instruction."""
    image: float = 0.0
    """Probability of dropping the image (and with it depth)."""
    depth: float = 0.0
    """Probability of dropping the depth map."""


@dataclass(frozen=True)
class StateNoiseConfig:
    """Training-time corrective chunks (DART, Laskey et al. 2017): a share of the samples start from a displaced
    wrist and their chunk returns to the recorded path by its end (``megohand.hand.vector.perturb_start``), so that
    the policy sees how to undo the drift of its own closed loop. Saved in the checkpoint's config; inference never
    perturbs."""

    prob: float = 0.0
    """Share of the training samples displaced (0 = off)."""
    transl: float = 0.02
    """Standard deviation of the wrist translation's displacement, per axis [m]."""
    rot: float = 0.05
    """Standard deviation of the wrist rotation's displacement, per axis of its axis-angle [rad]."""


@dataclass(frozen=True)
class PolicyConfig:
    """The whole MEgoHand policy."""

    preset: str = "compact"
    """Name of the preset this config started from (informative)."""
    modalities: Modalities = "TID"
    """Inputs besides the state: T text, V vision, TI text+image, TID text+image+depth (full)."""
    horizon: int = 16
    """Chunk length L (future frames predicted)."""
    state_dim: int = 109
    """State width (megohand.hand.vector.STATE_DIM)."""
    action_dim: int = 99
    """Action width (megohand.hand.vector.ACTION_DIM)."""
    backbone: BackboneConfig = BackboneConfig()
    """Cerebrum."""
    depth: DepthConfig = DepthConfig()
    """Depth."""
    dit: DiTConfig = DiTConfig()
    """Cerebellum."""
    flow: FlowConfig = FlowConfig()
    """Flow matching."""
    grounding: GroundingConfig = GroundingConfig()
    """Auxiliary grounding supervision (off by default)."""
    dropout: ModalityDropoutConfig = ModalityDropoutConfig()
    """Training-time modality dropout (off by default)."""
    state_noise: StateNoiseConfig = StateNoiseConfig()
    """Training-time corrective chunks from displaced wrists (off by default)."""
    text_context: Literal["segment", "task+segment"] = "segment"
    """The text the policy reads at a frame: its segment's (the paper's), or the episode's instruction and then the
    segment's, "<instruction>: <segment>" (``megohand.data.windows.window_text``); training and evaluation both."""

    @property
    def uses_text(self) -> bool:
        return "T" in self.modalities

    @property
    def uses_image(self) -> bool:
        return "V" in self.modalities or "I" in self.modalities

    @property
    def uses_depth(self) -> bool:
        return "D" in self.modalities and self.depth.source != "none"

    def to_dict(self) -> dict:
        """JSON-able dict (paths as strings)."""
        return _to_jsonable(dataclasses.asdict(self))

    @staticmethod
    def from_dict(d: dict) -> "PolicyConfig":
        """Inverse of to_dict (also reads the config.json of earlier versions); unknown keys raise ValueError."""
        d = dict(d)
        if isinstance(d.get("backbone"), dict):
            d["backbone"] = BackboneConfig.upgrade(d["backbone"])
        if isinstance(d.get("depth"), dict):
            d["depth"] = DepthConfig.upgrade(d["depth"])
        return _from_dict(PolicyConfig, d)

    @staticmethod
    def compact() -> "PolicyConfig":
        return compact()

    @staticmethod
    def paper() -> "PolicyConfig":
        return paper()


def compact() -> PolicyConfig:
    """Runs anywhere: bundled MiniLM text encoder, small CNNs, small DiT (about 10 M trainable parameters)."""
    return PolicyConfig(preset="compact")


def paper() -> PolicyConfig:
    """Paper scale: SigLIP-2 + SmolLM2 (12 layers) eagle backbone, ResNet-50 depth, DiT 16 x 1536."""
    return PolicyConfig(
        preset="paper",
        backbone=BackboneConfig(kind="eagle", image_size=224),
        depth=DepthConfig(source="given", encoder="resnet", supervision_size=56),
        dit=DiTConfig(
            width=1536, num_layers=16, num_heads=32, dropout=0.2, output_dim=1024, head_hidden=1024,
            mask_vl_padding=False,
        ),
    )


PRESETS = {"compact": compact, "paper": paper}


def _to_jsonable(x):
    if isinstance(x, dict):
        return {k: _to_jsonable(v) for k, v in x.items()}
    if isinstance(x, Path):
        return str(x)
    return x


def _from_dict(cls, d: dict):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown config keys {sorted(unknown)}")
    kwargs = {}
    for k, v in d.items():
        t = hints[k]
        if dataclasses.is_dataclass(t):
            v = _from_dict(t, v)
        elif v is not None and Path in typing.get_args(t):
            v = Path(v)
        kwargs[k] = v
    return cls(**kwargs)
