"""benchmarks/target_misses.py on a few synthetic scenes with a tiny random policy that has a grounding head: every
scored episode lands in every part, the ground-truth part agrees with the evaluator's own metric, and the
closed loop rolled out again gives the report's outcomes."""

import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

from megohand.evaluate.evaluator import EvalConfig, evaluate_store, load_episode, task_outcome
from megohand.models import MEgoHandPolicy
from megohand.models.config import GroundingConfig

from test_models_policy import compact_cfg, random_normalizer

ROOT = Path(__file__).resolve().parents[1]


def test_target_misses_reads_an_eval_report(tmp_path):
    from megohand.cli.demo import make_scenes
    from megohand.data.store import Store
    from megohand.data.synthetic import SynthConfig
    from megohand.hand import load_hand_model
    from megohand.inference.policy import load_policy

    hand = load_hand_model()
    make_scenes(tmp_path / "store", SynthConfig(seed=5, width=32, height=32), 3, hand)
    store = Store(tmp_path / "store")
    torch.manual_seed(0)
    cfg = replace(compact_cfg(grounding=GroundingConfig(weight=0.5)), horizon=16)
    MEgoHandPolicy(cfg, random_normalizer()).save_pretrained(tmp_path / "ck")
    policy = load_policy(tmp_path / "ck", "cpu")
    report = evaluate_store(store, {"model": lambda prev, s: policy}, hand,
                            EvalConfig(window_stride=16, rollout_frames=64, batch_size=8, reliance=()), log=lambda *a: None)
    (tmp_path / "eval.json").write_text(json.dumps(report))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import target_misses

    res = target_misses.main(["--store", str(tmp_path / "store"), "--ckpt", str(tmp_path / "ck"), "--eval",
                              str(tmp_path / "eval.json"), "--threads", "1", "--out", str(tmp_path / "tm.json")])
    scored = report["task_outcomes"]["rollout-tof"]["model"]
    assert scored and res["ground_truth_target_acc"]["all"]["episodes"] == len(scored)
    gt_hits = 0
    for o in scored:  # the ceiling: the evaluator's metric on the recorded motion
        ep = load_episode(store, o["dataset"], o["episode"])
        T = min(64, ep.num_frames - 2)
        gt_hits += task_outcome(hand, ep.states[1 : T + 2], ep, first_frame=1)["hit"]
    assert res["ground_truth_target_acc"]["all"]["hits"] == gt_hits
    assert len(res["looks"]) == 3 * len(scored) and {r["phase"] for r in res["looks"]} == set(target_misses.PHASES)
    assert all(r["target_px"] >= 0 and isinstance(r["points_at_target"], bool) for r in res["looks"])
    assert {r["frames_before"] for r in res["open_loop_episodes"]} == {8, 15}
    assert json.loads((tmp_path / "tm.json").read_text())["grounding_head"] is not None
    # the path part rolls the report's closed loop out again: the evaluator's outcome on every scored episode
    paths = {r["episode"]: r for r in res["closed_loop_path_episodes"]}
    assert set(paths) == {o["episode"] for o in scored}
    assert all(r["same_outcome"] and r["hit_at"]["0"] == r["hit"] for r in paths.values())
    assert res["closed_loop_path"]["same_outcome"] == len(scored)
    acc = sum(o["hit"] for o in scored) / len(scored)
    assert abs(res["closed_loop_path"]["target_acc_at"]["0"] - acc) < 1e-9
    for o in scored:  # the same motion (the same noise): the report's distance at contact, to float precision
        assert abs(paths[o["episode"]]["target_cm"] - o["target_cm"]) < 1e-6
        assert paths[o["episode"]]["target_closest_cm"] <= o["target_cm"] + 1e-6
