"""The paper's Eagle-2-style backbone (GR00T-N1; arXiv 2505.16602, the cerebrum; docs/model.md).

image (224) -> SigLIP vision tower -> (N = g x g patches) -> pixel shuffle 0.5 -> (g/2)^2 tokens x 4C
-> mlp1 (LayerNorm, Linear, GELU, Linear) -> visual tokens (+ depth tokens) placed at the ``<IMG_CONTEXT>``
positions of a ChatML prompt -> decoder LLM truncated to its first N layers (frozen) -> last hidden state
-> Linear to ``out_dim``. The returned mask is the prompt's attention mask.

Weights come from local folders (``vision_path``: a SigLIP / SigLIP-2 fixed-resolution checkpoint;
``llm_path``: a SmolLM2/Llama or Qwen2 causal LM with its tokenizer). ``random_init`` builds SigLIP-2
so400m/14-224 + SmolLM2-1.7B from configs with random weights (benchmarks); without ``llm_path`` its
tokenizer is the bundled MiniLM one (token ids only matter for speed there).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from megohand.models.backbones import bundled_text_path, use_sdpa

IMG_CONTEXT, IMG_START, IMG_END = "<IMG_CONTEXT>", "<img>", "</img>"


def siglip2_so400m_config():
    """SigLIP-2 so400m, patch 14, 224 px (GR00T-N1's vision tower), head removed."""
    from transformers import SiglipVisionConfig

    return SiglipVisionConfig(
        hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
        patch_size=14, image_size=224, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, vision_use_head=False,
    )


def smollm2_1p7b_config(num_layers: int):
    """SmolLM2-1.7B (GR00T-N1's LLM) with only ``num_layers`` decoder layers."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=49152, hidden_size=2048, intermediate_size=8192, num_hidden_layers=num_layers,
        num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=8192, rope_theta=130000.0,
        rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
    )


def pixel_shuffle(x: torch.Tensor, scale: float = 0.5) -> torch.Tensor:
    """InternVL/Eagle pixel shuffle (ps_version v2): (N, w, h, c) -> (N, w*s, h*s, c/s^2)."""
    n, w, h, c = x.shape
    x = x.reshape(n, w, int(h * scale), int(c / scale))
    x = x.permute(0, 2, 1, 3).contiguous()
    x = x.reshape(n, int(h * scale), int(w * scale), int(c / (scale * scale)))
    return x.permute(0, 2, 1, 3).contiguous()


def _check_folder(path, what: str) -> Path:
    if path is None:
        raise ValueError(f"the eagle backbone needs --model.backbone.{what} (a local folder) or random-init")
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{what} folder {path} has no config.json")
    return path


class EagleBackbone(nn.Module):
    def __init__(self, cfg, out_dim: int, use_text: bool, use_image: bool, aux_dir: Path | None = None):
        super().__init__()
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, SiglipVisionConfig, SiglipVisionModel

        self.cfg, self.use_text, self.use_image = cfg, use_text, use_image
        # ---- vision tower
        if aux_dir is not None:
            vcfg = SiglipVisionConfig.from_pretrained(aux_dir / "vision")
            vision = SiglipVisionModel(vcfg)
        elif cfg.random_init:
            vision = SiglipVisionModel(siglip2_so400m_config())
        else:
            vision = SiglipVisionModel.from_pretrained(_check_folder(cfg.vision_path, "vision-path"), local_files_only=True)
        if getattr(vision, "use_head", False):  # Eagle uses the patch tokens only
            vision.use_head = False
            del vision.head
        vision.config.vision_use_head = False
        self.vision = use_sdpa(vision)
        vc = vision.config
        grid = vc.image_size // vc.patch_size
        if grid % 2:
            raise ValueError(f"pixel shuffle needs an even patch grid, got {grid} ({vc.image_size}/{vc.patch_size})")
        self.image_size, self.image_grid = vc.image_size, grid // 2
        # ---- LLM (decoder only, truncated)
        if aux_dir is not None:
            lcfg = AutoConfig.from_pretrained(aux_dir / "llm")
            llm = AutoModelForCausalLM.from_config(lcfg)
            tok_dir = aux_dir / "llm"
        elif cfg.random_init and cfg.llm_path is None:
            llm = AutoModelForCausalLM.from_config(smollm2_1p7b_config(cfg.llm_layers))
            tok_dir = bundled_text_path()
        else:
            tok_dir = _check_folder(cfg.llm_path, "llm-path")
            llm = AutoModelForCausalLM.from_pretrained(tok_dir, local_files_only=True)
        self.tokenizer = AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
        missing = [t for t in (IMG_CONTEXT, IMG_START, IMG_END) if t not in self.tokenizer.get_vocab()]
        if missing:
            self.tokenizer.add_special_tokens({"additional_special_tokens": missing})
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.tokenizer.padding_side = "right"
        if len(self.tokenizer) > llm.get_input_embeddings().num_embeddings:
            llm.resize_token_embeddings(len(self.tokenizer))
        llm = use_sdpa(llm).get_decoder()
        llm.layers = llm.layers[: cfg.llm_layers]
        llm.config.num_hidden_layers = len(llm.layers)
        if getattr(llm.config, "layer_types", None) is not None:
            llm.config.layer_types = llm.config.layer_types[: len(llm.layers)]
        llm.config.use_cache = False
        self.llm = llm
        self.img_context_id = self.tokenizer.convert_tokens_to_ids(IMG_CONTEXT)
        H = llm.config.hidden_size
        # ---- projector and output
        c4 = vc.hidden_size * 4
        self.mlp1 = nn.Sequential(nn.LayerNorm(c4), nn.Linear(c4, H), nn.GELU(), nn.Linear(H, H))
        self.image_token_dim = H
        self.proj = nn.Linear(H, out_dim)
        # ---- freezing (GR00T: tune_llm False, tune_visual True)
        self.llm.requires_grad_(cfg.tune_llm)
        self.vision.requires_grad_(cfg.tune_visual)
        self.mlp1.requires_grad_(cfg.tune_visual)
        if cfg.lora_rank > 0:
            from peft import LoraConfig, get_peft_model

            lora = LoraConfig(
                r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                target_modules=["q_proj", "k_proj", "v_proj"],
            )
            self.llm = get_peft_model(self.llm, lora)
        self._ids_cache: dict[str, list[int]] = {}

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.cfg.tune_llm and self.cfg.lora_rank == 0:
            self.llm.eval()
        if not self.cfg.tune_visual:
            self.vision.eval()
        return self

    def export(self, folder: Path) -> None:
        self.vision.config.save_pretrained(folder / "vision")
        base = self.llm.get_base_model() if hasattr(self.llm, "get_base_model") else self.llm
        base.config.save_pretrained(folder / "llm")
        self.tokenizer.save_pretrained(folder / "llm")

    # ------------------------------------------------------------------ prompt
    def prompt(self, instruction: str) -> str:
        """ChatML prompt (qwen2-chat template) with the image placeholders first, as Eagle-2."""
        img = IMG_START + IMG_CONTEXT * self.image_grid**2 + IMG_END + "\n" if self.use_image else ""
        text = instruction if self.use_text else ""
        return (
            f"<|im_start|>system\n{self.cfg.system_prompt}<|im_end|>\n"
            f"<|im_start|>user\n{img}{text}<|im_end|>\n<|im_start|>assistant\n"
        )

    def tokenize(self, instructions: list[str], device) -> tuple[torch.Tensor, torch.Tensor]:
        """list of B strings -> (input_ids (B, S), attention_mask (B, S) bool), right-padded; ids cached per string."""
        rows = []
        for text in instructions:
            ids = self._ids_cache.get(text)
            if ids is None:
                ids = self.tokenizer(self.prompt(text), add_special_tokens=False)["input_ids"]
                if self.use_image and ids.count(self.img_context_id) != self.image_grid**2:
                    raise ValueError("the tokenizer split <IMG_CONTEXT>; it must be a single special token")
                if len(self._ids_cache) > 100_000:
                    self._ids_cache.clear()
                self._ids_cache[text] = ids
            rows.append(torch.tensor(ids))
        lengths = torch.tensor([len(r) for r in rows])
        ids = nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=self.tokenizer.pad_token_id)
        if self.cfg.text_pad_multiple > 0:  # bucketed lengths: fewer input shapes (see EagleBackboneConfig)
            ids = F.pad(ids, (0, -ids.shape[1] % self.cfg.text_pad_multiple), value=self.tokenizer.pad_token_id)
        mask = torch.arange(ids.shape[1])[None] < lengths[:, None]
        return ids.to(device, non_blocking=True), mask.to(device, non_blocking=True)

    # ------------------------------------------------------------------ forward
    vision_reads_text = False
    """The image tokens never depend on the instruction (vision_tokens can be reused for another question)."""

    def vision_tokens(self, image: torch.Tensor) -> torch.Tensor:
        """image (B, 3, S, S) float [0, 1] -> visual tokens (B, (g/2)^2, H) after pixel shuffle and mlp1."""
        x = self.vision(pixel_values=(image * 2 - 1).to(self.mlp1[1].weight.dtype)).last_hidden_state
        g = int(x.shape[1] ** 0.5)
        x = pixel_shuffle(x.reshape(x.shape[0], g, g, -1), 0.5)
        return self.mlp1(x.reshape(x.shape[0], -1, x.shape[-1]))

    def prepare_text(self, instructions: list[str] | None, batch: int, device) -> dict:
        """The CPU part of forward: B strings (None = B empty instructions) -> {input_ids (B, S) long, mask (B, S)
        bool, image_index (B, grid^2) long (positions of <IMG_CONTEXT>, with the image), padded: bool} on device."""
        ids, mask = self.tokenize(list(instructions) if instructions is not None else [""] * batch, "cpu")
        text = {"input_ids": ids.to(device, non_blocking=True), "mask": mask.to(device, non_blocking=True),
                "padded": not bool(mask.all())}
        if self.use_image:
            index = (ids == self.img_context_id).nonzero()[:, 1].view(ids.shape[0], self.image_grid**2)
            text["image_index"] = index.to(device, non_blocking=True)
        return text

    def forward_tokens(self, image, text: dict, depth_tokens=None, vision=None):
        """The tensor part of forward (no host syncs): image (B, 3, S, S) [0, 1], text from prepare_text,
        depth_tokens (B, grid^2, H) or None -> (tokens (B, S, out_dim), mask (B, S) bool). ``vision``:
        vision_tokens(image), when already computed."""
        ids, mask = text["input_ids"], text["mask"]
        embeds = self.llm.get_input_embeddings()(ids)
        if self.use_image:
            vis = self.vision_tokens(image) if vision is None else vision
            if depth_tokens is not None:
                vis = vis + depth_tokens.to(vis.dtype)
            index = text["image_index"][..., None].expand(-1, -1, embeds.shape[-1])
            embeds = embeds.scatter(1, index, vis.to(embeds.dtype))  # = masked_scatter at <IMG_CONTEXT>, sync-free
        # Without padding the mask is all ones: None gives the same causal attention and skips the mask checks.
        attn = mask.long() if text["padded"] else None
        h = self.llm(inputs_embeds=embeds, attention_mask=attn, use_cache=False).last_hidden_state
        return self.proj(h.to(self.proj.weight.dtype)), mask

    def image_tokens(self, tokens: torch.Tensor, text: dict) -> torch.Tensor:
        """The output tokens (B, S', out_dim) at the <IMG_CONTEXT> positions: (B, grid^2, out_dim), row-major."""
        return tokens.gather(1, text["image_index"][..., None].expand(-1, -1, tokens.shape[-1]))

    def forward(self, image=None, instructions=None, depth_tokens=None):
        B = image.shape[0] if image is not None else len(instructions)
        return self.forward_tokens(image, self.prepare_text(instructions, B, self.proj.weight.device), depth_tokens)
