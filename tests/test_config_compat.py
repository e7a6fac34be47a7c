"""Policy configs: the per-kind backbone blocks, the config.json files written before them (fixture strings saved
from that version of the code), and the `megohand train` backbone options on both kinds."""

import dataclasses
import json
import typing
from pathlib import Path

import pytest

from megohand.models.config import BackboneConfig, CompactBackboneConfig, EagleBackboneConfig, PolicyConfig

# config.json as written by megohand before the backbone config was split per kind (flat backbone fields)
OLD_COMPACT = """{"preset": "compact", "modalities": "TID", "horizon": 16, "state_dim": 109, "action_dim": 99, "backbone": {"kind": "compact", "image_size": 128, "augment": false, "text_path": null, "tune_text": true, "max_text_tokens": 20, "width": 64, "fusion_layers": 1, "fusion_heads": 4, "vision_path": null, "llm_path": null, "random_init": false, "llm_layers": 12, "tune_llm": false, "tune_visual": true, "lora_rank": 0, "lora_alpha": 16, "lora_dropout": 0.1, "system_prompt": "Given the initial token, generate a sequence of motion tokens semantically aligned with the following hand motion description."}, "depth": {"estimator": "store", "estimator_path": null, "estimator_metric": true, "encoder": "cnn", "encoder_path": null, "max_depth": 2.0, "supervision": true, "supervision_weight": 1.0, "supervision_size": 32}, "dit": {"width": 256, "num_layers": 6, "num_heads": 8, "dropout": 0.1, "ff_mult": 4, "output_dim": 256, "head_hidden": 256, "timestep_dim": 256, "max_positions": 1024, "mask_vl_padding": true}, "flow": {"beta_alpha": 1.5, "beta_beta": 1.0, "noise_s": 0.999, "timestep_buckets": 1000, "inference_steps": 4, "noise_scale": 1.0}, "grounding": {"weight": 0.0, "sigma": 0.75}, "dropout": {"text": 0.0, "image": 0.0, "depth": 0.0}}"""
OLD_PAPER = """{"preset": "paper", "modalities": "TID", "horizon": 16, "state_dim": 109, "action_dim": 99, "backbone": {"kind": "eagle", "image_size": 224, "augment": false, "text_path": null, "tune_text": false, "max_text_tokens": 32, "width": 256, "fusion_layers": 2, "fusion_heads": 4, "vision_path": "/w/siglip", "llm_path": "/w/smollm", "random_init": false, "llm_layers": 4, "tune_llm": false, "tune_visual": true, "lora_rank": 8, "lora_alpha": 16, "lora_dropout": 0.1, "system_prompt": "Given the initial token, generate a sequence of motion tokens semantically aligned with the following hand motion description."}, "depth": {"estimator": "depth_anything", "estimator_path": "/w/da", "estimator_metric": true, "encoder": "resnet", "encoder_path": null, "max_depth": 2.0, "supervision": true, "supervision_weight": 1.0, "supervision_size": 56}, "dit": {"width": 1536, "num_layers": 16, "num_heads": 32, "dropout": 0.2, "ff_mult": 4, "output_dim": 1024, "head_hidden": 1024, "timestep_dim": 256, "max_positions": 1024, "mask_vl_padding": false}, "flow": {"beta_alpha": 1.5, "beta_beta": 1.0, "noise_s": 0.999, "timestep_buckets": 1000, "inference_steps": 4, "noise_scale": 1.0}, "grounding": {"weight": 0.0, "sigma": 0.75}, "dropout": {"text": 0.0, "image": 0.0, "depth": 0.0}}"""


def test_old_compact_config_loads():
    c = PolicyConfig.from_dict(json.loads(OLD_COMPACT))
    b = c.backbone
    assert (b.kind, b.image_size, b.augment) == ("compact", 128, False)
    assert b.compact == CompactBackboneConfig(text_path=None, tune_text=True, max_text_tokens=20, width=64,
                                              fusion_layers=1, fusion_heads=4)
    assert b.eagle == EagleBackboneConfig()  # the old file held the defaults
    assert c.dit.width == 256 and c.depth.encoder == "cnn"


def test_old_paper_config_loads():
    c = PolicyConfig.from_dict(json.loads(OLD_PAPER))
    e = c.backbone.eagle
    assert c.backbone.kind == "eagle" and c.backbone.image_size == 224
    assert (e.vision_path, e.llm_path, e.llm_layers, e.lora_rank) == (Path("/w/siglip"), Path("/w/smollm"), 4, 8)
    assert c.depth.estimator_path == Path("/w/da") and c.dit.num_layers == 16


@pytest.mark.parametrize("old", [OLD_COMPACT, OLD_PAPER])
def test_new_layout_round_trips_and_keeps_every_old_value(old):
    old = json.loads(old)
    c = PolicyConfig.from_dict(old)
    d = c.to_dict()
    assert set(d["backbone"]) == {"kind", "image_size", "augment", "compact", "eagle"}
    assert PolicyConfig.from_dict(json.loads(json.dumps(d))) == c
    flat = {k: v for k, v in d["backbone"].items() if k not in ("compact", "eagle")}
    flat.update(d["backbone"]["compact"], **d["backbone"]["eagle"])
    # added since: at their defaults, which reproduce the old models
    new_fields = {"film": False, "text_pad_multiple": 0}
    assert flat == {**new_fields, **old["backbone"]}


def test_shipped_demo_checkpoint_config_loads():
    from megohand.inference.policy import DEMO_CHECKPOINT
    from megohand.models.policy import checkpoint_config

    raw = json.loads((DEMO_CHECKPOINT / "config.json").read_text())
    cfg, norm = checkpoint_config(DEMO_CHECKPOINT)
    assert cfg.backbone.kind == raw["backbone"]["kind"] and cfg.backbone.image_size == raw["backbone"]["image_size"]
    width = raw["backbone"]["compact"]["width"] if "compact" in raw["backbone"] else raw["backbone"]["width"]
    assert cfg.backbone.compact.width == width and norm is not None


def test_demo_experiment_is_the_recipe_of_the_shipped_checkpoint():
    """`scripts/train_demo.py` (the `demo` experiment) trains the model the package ships, setting for setting."""
    from megohand.inference.policy import DEMO_CHECKPOINT
    from megohand.models.policy import checkpoint_config
    from megohand.train.experiments import get_experiment

    shipped, _ = checkpoint_config(DEMO_CHECKPOINT)
    recipe = get_experiment("demo").train.model
    assert recipe.to_dict() == shipped.to_dict()
    trained = json.loads((DEMO_CHECKPOINT / "train.json").read_text())["run_config"]
    demo = get_experiment("demo").train
    assert (trained["steps"], trained["batch_size"], trained["lr"]) == (demo.steps, demo.batch_size, demo.lr)
    assert recipe.grounding.refer > 0 and recipe.grounding.parse > 0  # the A/B in the README chose them
    assert recipe.grounding.state and recipe.grounding.state_dropout > 0  # so did the grounded-state A/B
    assert recipe.text_context == "task+segment"  # and the task-text A/B


def test_unknown_backbone_key_is_refused():
    d = json.loads(OLD_COMPACT)
    d["backbone"]["widht"] = 3
    with pytest.raises(ValueError, match="widht"):
        PolicyConfig.from_dict(d)


def test_replace_routes_fields_to_their_block():
    b = BackboneConfig().replace(image_size=64, width=32, llm_layers=3)
    assert b.image_size == 64 and b.compact.width == 32 and b.eagle.llm_layers == 3
    assert b.compact.fusion_layers == CompactBackboneConfig().fusion_layers


def test_train_backbone_options_keep_their_names():
    import tyro

    from megohand.cli.train import named_default

    def parse(argv):
        cls, default, rest = named_default(argv)
        return tyro.cli(cls, args=rest, default=default)

    t = parse(["--config", "paper", "--model.backbone.llm-layers", "4", "--model.backbone.vision-path", "/v",
               "--model.backbone.lora-rank", "2"])
    assert t.model.backbone.kind == "eagle" and t.model.backbone.eagle.llm_layers == 4
    assert t.model.backbone.eagle.vision_path == Path("/v") and t.model.backbone.eagle.lora_rank == 2
    t = parse(["--config", "synthetic", "--model.backbone.width", "32", "--model.backbone.fusion-layers", "1",
               "--model.backbone.image-size", "64"])
    assert (t.model.backbone.compact.width, t.model.backbone.compact.fusion_layers, t.model.backbone.image_size) == (32, 1, 64)
    assert t.model.grounding.weight > 0  # the recipe's other fields stay
    t = parse(["model:paper", "--model.backbone.random-init"])
    assert t.model.backbone.eagle.random_init and t.model.backbone.kind == "eagle"


@pytest.mark.parametrize("old, new", [("store", "given"), ("depth_anything", "estimated"), ("none", "none")])
def test_old_depth_estimator_names_map_to_the_depth_vocabulary(old, new):
    d = json.loads(OLD_PAPER)
    d["depth"]["estimator"] = old
    c = PolicyConfig.from_dict(d)
    assert c.depth.source == new and "estimator" not in c.to_dict()["depth"]
    assert c.uses_depth == (new != "none")


def test_depth_options_follow_the_vocabulary():
    import tyro

    from megohand.cli.convert import Convert
    from megohand.cli.generate import Generate
    from megohand.cli.train import named_default
    from megohand.data.store import DEPTH_SOURCES

    cls, default, rest = named_default(["--config", "synthetic", "--stored-depth", "required",
                                        "--model.depth.source", "estimated", "--model.depth.estimator-path", "/d"])
    t = tyro.cli(cls, args=rest, default=default)
    assert (t.stored_depth, t.model.depth.source, t.model.depth.estimator_path) == ("required", "estimated", Path("/d"))
    # convert stores the origins a meta.json names (plus auto)
    assert set(typing.get_args(typing.get_type_hints(Convert)["depth"])) == {"auto", *DEPTH_SOURCES} - {"estimated"}
    assert "depth_estimator" in {f.name for f in dataclasses.fields(Generate)}
