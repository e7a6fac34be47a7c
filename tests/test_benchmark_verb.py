"""`megohand benchmark` end to end at a toy scale (12 episodes, 1 training step): the files it writes, resume, the
seed aggregation, and the control that an image-blind variant (T) is unchanged when the RGB comes from another
episode."""

import json
import math

import pytest

from megohand.cli.benchmark import Benchmark, ablation_args, group_runs, mean_spread, speed_lines


def test_group_runs_and_mean_spread_by_hand():
    groups = group_runs(["TID_s0", "TID_s1", "TID_s0_no-dropout", "T_s0", "static", "const-vel"])
    assert groups == {"TID": ["TID_s0", "TID_s1"], "TID no-dropout": ["TID_s0_no-dropout"], "T": ["T_s0"],
                      "static": ["static"], "const-vel": ["const-vel"]}
    assert mean_spread([1.0, 4.0, math.nan, None]) == (2.5, 3.0)
    assert all(math.isnan(x) for x in mean_spread([math.nan]))


def test_ablations_join_with_plus():
    assert ablation_args("refer+parse") == ("--model.grounding.refer=0.5", "--model.grounding.parse=0.5")
    assert ablation_args("film") == ("--model.backbone.film",)
    with pytest.raises(SystemExit, match="unknown variants or ablations \\['nope'\\]"):
        Benchmark(ablations=("refer+nope",)).run()


@pytest.mark.slow
def test_benchmark_toy_run(tmp_path):
    b = Benchmark(config="synthetic", work=tmp_path / "work", out=tmp_path / "out", variants=("T",), seeds=(0,),
                  episodes=12, steps=1, workers=1, max_test_episodes=2, protocol_rollout_frames=8, device="cpu",
                  train_args=("num-workers=0", "eval-every=100000", "batch-size=4"))
    b.run()
    report = json.loads((tmp_path / "out" / "synthetic.json").read_text())
    md = (tmp_path / "out" / "synthetic.md").read_text()
    assert (tmp_path / "work" / "T_s0" / "model" / "config.json").is_file()
    assert "T_s0" in report["train_minutes"]
    assert report["runs"] == {"T_s0": ["--model.modalities", "T", "--seed", "0"]}
    assert report["train"]["steps"] == 1 and report["episodes"] == 12
    assert report["train"]["batch_size"] == 4  # the config as run, --train-args included
    assert report["train_speed"]["T_s0"] == {}  # one logged interval, the start-up one, is left out
    window = report["results"]["window"]
    base = window["T_s0"]["[synthetic]"]["mpjpe_cm"]
    assert math.isfinite(base) and {"static", "const-vel"} <= set(window)
    # the control: T never reads pixels, so RGB and depth from another episode change nothing, to the bit
    for swap in ("RGB", "depth"):
        assert window[f"T_s0 · {swap} from another episode"]["[synthetic]"]["mpjpe_cm"] == base
    assert "| T | 1 |" in md and "RGB from another episode | +0.0 %" in md
    # resumable: a second run trains nothing (the finished model is kept) and writes the same table
    mtime = (tmp_path / "work" / "T_s0" / "model" / "config.json").stat().st_mtime
    b.run()
    assert (tmp_path / "work" / "T_s0" / "model" / "config.json").stat().st_mtime == mtime


def test_training_speed_from_metrics(tmp_path):
    from megohand.cli.benchmark import training_speed

    rows = [{"step": 10, "train/samples_per_s": 5.0, "train/data_wait_share": 0.9},  # start-up: left out
            {"step": 20, "train/samples_per_s": 100.0, "train/data_wait_share": 0.5},
            {"step": 20, "eval/loss_fm": 0.3},
            {"step": 30, "train/samples_per_s": 300.0, "train/data_wait_share": 0.1},
            {"step": 40, "train/samples_per_s": 200.0, "train/data_wait_share": 0.2}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert training_speed(tmp_path) == {"samples_per_s": 200.0, "data_wait_share": 0.2}
    assert training_speed(tmp_path / "missing") == {}
    assert speed_lines({"T_s0": training_speed(tmp_path), "TID_s0": {}})[0] == \
        "Training speed (median over logged intervals): T_s0 200 samples/s (waiting for data 20 %)."
    assert speed_lines({"T_s0": {}}) == []


def test_run_commands_keeps_to_its_limit_and_names_the_failed_log(tmp_path):
    import sys

    from megohand.cli.benchmark import run_commands

    # each command records its start and end time; at most two may overlap
    stamp = "import sys, time; open(sys.argv[1], 'w').write(f'{time.time()} '); time.sleep(0.8); " \
            "open(sys.argv[1], 'a').write(f'{time.time()}'); print('done', sys.argv[1])"
    cmds = {f"r{i}": [sys.executable, "-c", stamp, str(tmp_path / f"r{i}.t")] for i in range(5)}
    minutes = run_commands(cmds, tmp_path / "logs", at_once=2)
    assert set(minutes) == set(cmds) and all(m > 0.8 / 60 for m in minutes.values())
    spans = [tuple(map(float, (tmp_path / f"r{i}.t").read_text().split())) for i in range(5)]
    overlap = max(sum(a <= t < b for a, b in spans) for t, _ in spans)
    assert overlap == 2  # two at a time, not one, not five
    assert "done" in (tmp_path / "logs" / "r3.log").read_text()
    fail = {"ok": [sys.executable, "-c", "pass"], "bad": [sys.executable, "-c", "raise SystemExit(3)"]}
    with pytest.raises(SystemExit, match=r"training run bad failed \(exit 3\): see .*bad\.log"):
        run_commands(fail, tmp_path / "logs", at_once=2)
    with pytest.raises(SystemExit, match="at least 1"):
        run_commands(cmds, tmp_path / "logs", at_once=0)
