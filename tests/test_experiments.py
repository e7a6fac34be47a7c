"""Named experiments: `megohand train --config NAME` starts from the recipe and every option overrides it; the
benchmark's grouping over seeds."""

import math

import pytest

from megohand.cli.benchmark import group_runs, mean_spread
from megohand.cli.train import Train, TrainFromConfig, named_default
from megohand.errors import UserError
from megohand.train.experiments import EXPERIMENTS, get_experiment


def parse(argv):
    import tyro

    cls, default, rest = named_default(argv)
    return tyro.cli(cls, args=rest, default=default)


def test_named_config_defaults_and_overrides():
    t = parse(["--config", "synthetic", "--store", "s", "--model.modalities", "T", "--seed", "3"])
    exp = get_experiment("synthetic").train
    assert isinstance(t, TrainFromConfig) and t.config == "synthetic"
    assert (t.steps, t.batch_size, t.lr, t.window_scope, t.normalizer) == (exp.steps, exp.batch_size, exp.lr,
                                                                            "episode", "min_max_per_step")
    assert t.model.modalities == "T" and t.seed == 3 and str(t.store) == "s"
    assert t.model.grounding == exp.model.grounding and t.model.grounding.weight > 0
    t = parse(["--config=synthetic-classic", "--model.dit.num-layers", "4"])
    assert t.model.grounding.weight == 0 and t.model.dit.num_layers == 4
    t = parse(["--store", "s"])
    assert isinstance(t, Train) and t.config is None
    with pytest.raises(UserError, match="known: paper"):
        parse(["--config", "nope"])


def test_every_experiment_is_complete():
    for name, exp in EXPERIMENTS.items():
        assert exp.description and exp.train.steps > 0, name
        if exp.world is not None:
            from megohand.data.synthetic import SynthConfig

            SynthConfig(**exp.world)  # every key is a world field
            assert exp.episodes > 0


def test_benchmark_groups_seeds():
    g = group_runs(["TID_s0", "TID_s1", "T_s0", "TID_s0_no-grounding", "static", "const-vel"])
    assert g == {"TID": ["TID_s0", "TID_s1"], "T": ["T_s0"], "TID no-grounding": ["TID_s0_no-grounding"],
                 "static": ["static"], "const-vel": ["const-vel"]}
    assert mean_spread([1.0, 3.0, math.nan]) == (2.0, 2.0)
    assert all(math.isnan(v) for v in mean_spread([]))
