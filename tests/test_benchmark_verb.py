"""`megohand benchmark` end to end at a toy scale (12 episodes, 1 training step): the files it writes, resume, the
seed aggregation, and the control that an image-blind variant (T) is unchanged when the RGB comes from another
episode."""

import json
import math
from dataclasses import replace

import pytest

from megohand.cli.benchmark import ABLATIONS, Benchmark, ablation_args, group_runs, mean_spread, run_args, speed_lines


def test_group_runs_and_mean_spread_by_hand():
    groups = group_runs(["TID_s0", "TID_s1", "TID_s0_no-dropout", "T_s0", "static", "const-vel"])
    assert groups == {"TID": ["TID_s0", "TID_s1"], "TID no-dropout": ["TID_s0_no-dropout"], "T": ["T_s0"],
                      "static": ["static"], "const-vel": ["const-vel"]}
    assert mean_spread([1.0, 4.0, math.nan, None]) == (2.5, 3.0)
    assert all(math.isnan(x) for x in mean_spread([math.nan]))


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_every_ablation_parses_and_builds_a_policy(name):
    """Each named change is a valid ``megohand train`` command line whose model builds (the TID variant the
    ablations apply to), e.g. teacher forcing only together with what it forces."""
    import tyro

    from megohand.cli.train import Train
    from megohand.models import MEgoHandPolicy
    from test_models_policy import compact_cfg

    model = tyro.cli(Train, args=["--store", "s", "--out", "o", "model:compact", *ablation_args(name)]).model
    tiny = compact_cfg(grounding=model.grounding, dropout=model.dropout)
    MEgoHandPolicy(replace(tiny, backbone=replace(tiny.backbone, compact=replace(
        tiny.backbone.compact, film=model.backbone.compact.film))))


def test_ablations_join_with_plus():
    assert ablation_args("refer+parse") == ("--model.grounding.refer=0.5", "--model.grounding.parse=0.5")
    assert ablation_args("film") == ("--model.backbone.film",)
    with pytest.raises(SystemExit, match="unknown variants or ablations \\['nope'\\]"):
        Benchmark(ablations=("refer+nope",)).run()


def test_run_names():
    assert run_args("TI_s1") == ("--model.modalities", "TI", "--seed", "1")
    assert run_args("TID_s0_refer+parse") == ("--model.modalities", "TID", "--seed", "0",
                                              "--model.grounding.refer=0.5", "--model.grounding.parse=0.5")
    for bad in ("TX_s0", "TI_1", "TI_sx", "TI", "TID_s0_nope"):
        with pytest.raises(SystemExit, match=f"bad run name '{bad}'"):
            run_args(bad)


def test_run_config_of_a_run_or_of_its_slim_export(tmp_path):
    from megohand.cli.benchmark import run_config

    (tmp_path / "a" / "model").mkdir(parents=True)
    assert run_config(tmp_path / "a") is None
    (tmp_path / "a" / "model" / "train.json").write_text(json.dumps({"run_config": {"steps": 7}, "minutes": 1}))
    assert run_config(tmp_path / "a") == {"steps": 7}
    (tmp_path / "a" / "train_config.json").write_text(json.dumps({"steps": 9}))
    assert run_config(tmp_path / "a") == {"steps": 9}


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
    # resumable: a second run, here naming its run, trains nothing (the finished model is kept) and writes the table
    mtime = (tmp_path / "work" / "T_s0" / "model" / "config.json").stat().st_mtime
    b.variants, b.runs = ("TID",), ("T_s0",)
    b.run()
    assert json.loads((tmp_path / "out" / "synthetic.json").read_text())["runs"] == report["runs"]
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
    assert training_speed(tmp_path / "metrics.jsonl", max_step=30) == {"samples_per_s": 200.0, "data_wait_share": 0.3}
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


@pytest.mark.parametrize("at_once", [1, 2])
def test_run_commands_stopped_stops_its_runs(tmp_path, at_once):
    """`kill PID` of a benchmark stops the training runs it started (before, they trained on as orphans, and a
    benchmark started again trained the same folders beside them)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    sleeper = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)"
    runner = ("import sys; from pathlib import Path; from megohand.cli.benchmark import run_commands\n"
              f"cmds = {{f'r{{i}}': [sys.executable, '-c', {sleeper!r}, str(Path(sys.argv[1]) / f'r{{i}}.pid')] "
              "for i in range(3)}\n"
              f"run_commands(cmds, Path(sys.argv[1]) / 'logs', at_once={at_once})")
    proc = subprocess.Popen([sys.executable, "-c", runner, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    pid_files = [tmp_path / f"r{i}.pid" for i in range(at_once)]
    deadline = time.time() + 60
    while not all(f.is_file() and f.read_text() for f in pid_files) and time.time() < deadline:
        time.sleep(0.05)
    children = [int(f.read_text()) for f in pid_files]
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert f"{at_once} running command(s) stopped with it" in out
    assert not (tmp_path / f"r{at_once}.pid").exists()  # the queued run never started
    for pid in children:
        with pytest.raises(ProcessLookupError):  # stopped and reaped by the runner
            os.kill(pid, 0)


def test_merge_reports_by_script(tmp_path):
    """benchmarks/merge_benchmark.py: each run from the first report that has it, with its reliance rows; the table
    pools the seeds of both; a report of another recipe is refused, naming the setting."""
    import subprocess
    import sys
    from pathlib import Path

    def report(runs: dict[str, float], steps=10, seed=0):
        key = "[synthetic]"
        rel = [f"{m} · RGB from another episode" for m in runs]
        window = {m: {key: {"mpjpe_cm": v}} for m, v in runs.items()}
        window.update({f"{m} · RGB from another episode": {key: {"mpjpe_cm": 2 * v}} for m, v in runs.items()})
        return {"methods": list(runs), "reliance": rel, "results": {"window": window},
                "datasets": {"synthetic": {"episodes": 4, "windows": 8}}, "config": {"horizon": 16},
                "experiment": "synthetic", "hand_model": "h", "device": "gpu", "command": "c",
                "train": {"steps": steps, "batch_size": 4, "seed": seed, "out": f"o{seed}"}}

    paths = []
    for name, r in {"new": report({"TI_s1": 3.0, "T_s1": 5.0}, seed=1),
                    "old": report({"T_s0": 4.0, "T_s1": 99.0}),
                    "other": report({"V_s0": 1.0}, steps=20)}.items():
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(r))
    script = [sys.executable, str(Path(__file__).resolve().parents[1] / "benchmarks" / "merge_benchmark.py")]
    subprocess.run([*script, *map(str, paths[:2]), "--out", str(tmp_path / "m")], check=True, capture_output=True)
    merged = json.loads((tmp_path / "m.json").read_text())
    assert merged["sources"] == {"TI_s1": str(paths[0]), "T_s1": str(paths[0]), "T_s0": str(paths[1])}
    assert merged["results"]["window"]["T_s1"]["[synthetic]"]["mpjpe_cm"] == 5.0  # the first report wins
    assert "T_s0 · RGB from another episode" in merged["reliance"]
    assert merged["methods"] == ["TI_s1", "T_s0", "T_s1"]  # runs by variant, then seed
    md = (tmp_path / "m.md").read_text()
    assert "| T | 2 | 4.500 ± 1.000 |" in md and "| TI | 1 | 3.000 |" in md
    bad = subprocess.run([*script, str(paths[0]), str(paths[2]), "--out", str(tmp_path / "b")], capture_output=True,
                         text=True)
    assert bad.returncode != 0 and "'train.steps': (20, 10)" in bad.stderr
    # a report whose first run is an ablation records that run's config: its ablated setting is not the recipe's
    abl = report({"TI_s0_refer": 2.0})
    abl["runs"] = {"TI_s0_refer": []}
    abl["train"]["model"] = {"grounding": {"refer": 0.5, "weight": 0.5}}
    plain = report({"TI_s0": 3.0})
    plain["runs"] = {"TI_s0": []}
    plain["train"]["model"] = {"grounding": {"refer": 0.0, "weight": 0.5}}
    other = json.loads(json.dumps(plain))
    other["train"]["model"]["grounding"]["weight"] = 0.0
    for name, r in {"plain": plain, "abl": abl, "other": other}.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(r))
    subprocess.run([*script, str(tmp_path / "plain.json"), str(tmp_path / "abl.json"), "--out", str(tmp_path / "a")],
                   check=True, capture_output=True)
    assert json.loads((tmp_path / "a.json").read_text())["methods"] == ["TI_s0", "TI_s0_refer"]
    bad = subprocess.run([*script, str(tmp_path / "abl.json"), str(tmp_path / "other.json"), "--out",
                          str(tmp_path / "b")], capture_output=True, text=True)
    assert bad.returncode != 0 and "'train.model.grounding.weight': (0.0, 0.5)" in bad.stderr


def test_eval_summary_pairs_episodes_by_script(tmp_path):
    """benchmarks/eval_summary.py: accuracy and its standard error from each episode's outcome, the pairs counted by
    episode (hand-made outcomes), an earlier summary extended, another protocol refused."""
    import subprocess
    import sys
    from pathlib import Path

    def report(hits: list[bool], window=3.0, rollout_frames=64):
        key = "synthetic"
        res = lambda v, acc=None: {key: {"mpjpe_cm": v, "target_acc": acc, "dest_cm": 1.0}}  # noqa: E731
        return {"config": {"horizon": 16, "rollout_frames": rollout_frames, "reliance": [], "split": "test"},
                "datasets": {key: {"episodes": len(hits)}},
                "results": {"window": {"model": res(window), "static": res(7.0)},
                            "rollout-tof": {"model": res(6.0, sum(hits) / len(hits)), "static": res(7.0, 0.25)},
                            "rollout-raw": {"model": res(9.0, 0.5)}},
                "task_outcomes": {"rollout-tof": {"model": [{"dataset": key, "episode": f"{i:06d}", "hit": h}
                                                            for i, h in enumerate(hits)]}}}

    files = {"a": report([True, True, False, False]), "b": report([True, False, True, False], window=4.0),
             "c": report([True, True, True, True]), "other": report([True] * 4, rollout_frames=32)}
    for name, r in files.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(r))
    script = [sys.executable, str(Path(__file__).resolve().parents[1] / "benchmarks" / "eval_summary.py")]
    run = lambda *args: subprocess.run([*script, *map(str, args)], capture_output=True, text=True)  # noqa: E731
    assert run(f"a={tmp_path / 'a.json'}", f"b={tmp_path / 'b.json'}", "--out", tmp_path / "s.json").returncode == 0
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["summary"]["a"]["hits"] == 2 and s["summary"]["a"]["standard_error"] == 0.25  # sqrt(.5 * .5 / 4)
    assert s["summary"]["b"]["window_mpjpe_cm"] == 4.0 and s["summary"]["static"]["tof_target_acc"] == 0.25
    assert s["paired_target_hits"]["a vs b"] == {"both": 1, "only_first": 1, "only_second": 1, "neither": 1}
    assert run(f"c={tmp_path / 'c.json'}", "--extend", tmp_path / "s.json", "--out", tmp_path / "t.json").returncode == 0
    t = json.loads((tmp_path / "t.json").read_text())
    assert list(t["summary"]) == ["a", "b", "c", "static"]
    assert t["paired_target_hits"]["b vs c"] == {"both": 2, "only_first": 0, "only_second": 2, "neither": 0}
    bad = run(f"a={tmp_path / 'a.json'}", f"o={tmp_path / 'other.json'}", "--out", tmp_path / "u.json")
    assert bad.returncode != 0 and "'rollout_frames': (32, 64)" in bad.stderr
    # inference settings: refused unless --sampler-may-differ, then recorded per row; an option an older report
    # predates is not compared
    guided = report([True] * 4)
    guided["config"]["text_guidance"] = 2.0
    (tmp_path / "g.json").write_text(json.dumps(guided))
    pair = (f"a={tmp_path / 'a.json'}", f"g={tmp_path / 'g.json'}")
    assert run(*pair, "--out", tmp_path / "v.json").returncode == 0  # 'a' has no text_guidance key
    none = json.loads(json.dumps(guided))
    none["config"]["text_guidance"] = None
    (tmp_path / "n.json").write_text(json.dumps(none))
    bad = run(f"n={tmp_path / 'n.json'}", f"g={tmp_path / 'g.json'}", "--out", tmp_path / "w.json")
    assert bad.returncode != 0 and "'text_guidance': (2.0, None)" in bad.stderr
    assert run(f"n={tmp_path / 'n.json'}", f"g={tmp_path / 'g.json'}", "--sampler-may-differ", "--out",
               tmp_path / "w.json").returncode == 0
    w = json.loads((tmp_path / "w.json").read_text())
    assert w["summary"]["g"]["sampler"]["text_guidance"] == 2.0 and w["summary"]["n"]["sampler"]["text_guidance"] is None
