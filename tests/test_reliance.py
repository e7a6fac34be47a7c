"""Input reliance and task metrics of ``megohand eval`` on a few synthetic scenes.

Controls: a policy that ignores the image must give bit-identical numbers when the RGB comes from another episode
(same windows, same noise), while one that reads the image must not; the derangement never pairs an episode with
itself; target accuracy and the destination distance against hand-computed cases.
"""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from megohand.evaluate.evaluator import EvalConfig, _Pool, derangement, evaluate_store, reliance_name
from megohand.inference.baselines import StaticPolicy
from megohand.metrics import carried_to, closest_object, grip_point

torch.set_num_threads(1)


class NoisyStatic:
    """Static pose plus a small noise draw on the wrist translation; ``gain`` > 0 adds the image's mean brightness."""

    def __init__(self, gain: float = 0.0, horizon: int = 16):
        self.gain, self.static = gain, StaticPolicy(horizon)

    def predict_chunk(self, image, instructions, state, depth=None, steps=None, generator=None):
        a = self.static.predict_chunk(image, instructions, state).clone()
        noise = torch.randn(a.shape[:-1] + (3,), generator=generator, dtype=a.dtype) * 0.01
        a[..., -3:] += noise
        if self.gain:
            a[..., -3:] += self.gain * image.float().mean(dim=(1, 2, 3))[:, None, None] / 255
        return a


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    from megohand.cli.demo import make_scenes
    from megohand.data.store import Store
    from megohand.data.synthetic import SynthConfig
    from megohand.hand import load_hand_model

    hand = load_hand_model()
    root = tmp_path_factory.mktemp("scenes")
    make_scenes(root, SynthConfig(seed=5, width=32, height=32), 3, hand)
    return Store(root), hand


def test_derangement_has_no_fixed_point():
    def ep(w, h):
        return SimpleNamespace(episode_obj=SimpleNamespace(meta=SimpleNamespace(width=w, height=h)))

    eps = [ep(32, 32), ep(64, 48), ep(32, 32), ep(32, 32), ep(10, 10)]
    p = derangement(eps)
    assert p[4] is None and p[1] is None  # nobody of its size
    same = [0, 2, 3]
    assert sorted(p[i] for i in same) == same and all(p[i] != i for i in same)


def test_reliance_control_blind_vs_looking(scenes):
    store, hand = scenes
    cfg = EvalConfig(window_stride=8, rollout_frames=64, batch_size=8, reliance=("rgb", "text"))
    methods = {"blind": lambda prev, s: NoisyStatic(0.0), "looks": lambda prev, s: NoisyStatic(0.5)}
    rep = evaluate_store(store, methods, hand, cfg, log=lambda *a: None)
    res = rep["results"]
    for proto in ("window", "rollout-tof"):
        blind, swapped = res[proto]["blind"]["synthetic"], res[proto][reliance_name("blind", "rgb")]["synthetic"]
        assert blind["mpjpe_cm"] == swapped["mpjpe_cm"]  # same noise, image unused: bit-identical
        looks, lswap = res[proto]["looks"]["synthetic"], res[proto][reliance_name("looks", "rgb")]["synthetic"]
        assert abs(looks["mpjpe_cm"] - lswap["mpjpe_cm"]) > 1e-4
    assert reliance_name("blind", "text") in rep["reliance"]
    assert "Input reliance" in __import__("megohand.evaluate.tables", fromlist=["x"]).results_markdown(rep)
    # the static hand never reaches: its target accuracy is a share in [0, 1] over the episodes with a contact
    acc = res["rollout-tof"]["blind"]["synthetic"]["target_acc"]
    assert 0.0 <= acc <= 1.0 and res["rollout-tof"]["blind"]["synthetic"]["task_episodes"] >= 1
    # the per-episode outcomes are the ones the share counts
    rows = rep["task_outcomes"]["rollout-tof"]["blind"]
    assert len(rows) == res["rollout-tof"]["blind"]["synthetic"]["task_episodes"]
    assert math.isclose(np.mean([r["hit"] for r in rows]), acc)
    assert all(r["hit"] == (r["closest"] == r["target"]) for r in rows)
    assert {r["episode"] for r in rows} <= {ref.episode for ref in store.episodes(split="test")}
    assert set(rep["task_outcomes"]["rollout-tof"]) >= {"blind", "looks", reliance_name("looks", "rgb")}
    assert all((r["target_object"] == r["reached_object"]) == r["hit"] for r in rows)
    # each outcome names its task, the one the store's meta says
    metas = {r.episode: store.open(r.dataset, r.episode).meta.extra["task"] for r in store.episodes(split="test")}
    assert all(r["task"] == metas[r["episode"]] for r in rows)
    md = __import__("megohand.evaluate.tables", fromlist=["x"]).results_markdown(rep)
    assert f"| blind | {len(rows)} | {sum(r['hit'] for r in rows)} |" in md


def test_miss_kinds_by_hand():
    from megohand.evaluate.tables import miss_kind, miss_table

    assert miss_kind("red box", "red box") == "hit"
    assert miss_kind("purple box", "purple sphere") == "colour"
    assert miss_kind("red cylinder", "green cylinder") == "shape"
    assert miss_kind("red cone", "blue box") == "other"
    outs = [{"target_object": t, "reached_object": r} for t, r in
            [("red box", "red box"), ("red box", "red cone"), ("red box", "blue box"), ("red box", "blue cone"),
             ("red box", "red cone")]]
    assert miss_table({"m": outs, "n": [{"hit": True}]}).splitlines()[-1] == "| m | 5 | 1 | 2 | 1 | 1 |"
    assert miss_table({"n": [{"hit": True}]}) == ""


def test_task_metric_hand_computed(scenes):
    """Rollout states equal to the ground truth reach the instructed object (its grip point is where the scripted
    grasp puts it); the static hand from frame 1 is compared with the hand-computed closest object."""
    from megohand.evaluate.evaluator import load_episode
    from megohand.hand.vector import state_to_params

    store, hand = scenes
    eps = [load_episode(store, r.dataset, r.episode) for r in store.episodes(split="test")]
    eps = [e for e in eps if e.facts is not None and e.facts.contact_frame is not None]
    assert eps
    pool = _Pool(hand)
    gt = torch.stack([e.states[: min(x.num_frames for x in eps)] for e in eps])
    pool.add_task(("p", "gt", "d"), gt, eps, first_frame=0)
    static = gt[:, :1].expand_as(gt)
    pool.add_task(("p", "static", "d"), static, eps, first_frame=0)
    out = pool.reduce()
    n = len(pool.task[("p", "gt", "d")]["hits"])
    assert n >= 1 and out["p"]["gt"]["d"]["target_acc"] == 1.0
    expect, dist = [], []
    for e in eps:
        f = e.facts
        if f.contact_frame >= gt.shape[1]:
            continue
        j = hand.forward_params(state_to_params(e.states[:1].double())).joints[0].numpy()
        g = j[[16, 17, 18]].mean(0)
        expect.append(int(np.argmin(np.linalg.norm(f.centers[f.contact_frame] - g, axis=-1))))
        dist.append(100 * np.linalg.norm(f.centers[f.contact_frame][f.target] - g))
    rows = pool.outcomes[("p", "static")]
    assert np.allclose([r["target_cm"] for r in rows], dist, atol=1e-4)
    assert [r["closest"] for r in rows] == expect and [r["episode"] for r in rows] == [
        e.episode for e in eps if e.facts.contact_frame < gt.shape[1]]
    hits = [c == e.facts.target for c, e in zip(expect, [e for e in eps if e.facts.contact_frame < gt.shape[1]])]
    assert math.isclose(out["p"]["static"]["d"]["target_acc"], float(np.mean(hits)))

    from megohand.cli.demo import scene_lines

    lines = scene_lines(eps, rows)
    assert lines[0] == f"closed loop + TOF, {sum(hits)} of {len(rows)} scenes reach the instructed object:"
    assert len(lines) == 1 + len(rows) and all(f"scene {r['episode']}:" in line for r, line in zip(rows, lines[1:]))
    assert scene_lines(eps, []) == []


class TextRecorder(NoisyStatic):
    """NoisyStatic that records the texts it is given; ``model.config.text_context`` as a trained policy has it."""

    def __init__(self, context: str):
        super().__init__()
        self.model = SimpleNamespace(config=SimpleNamespace(text_context=context))
        self.texts: list[str] = []

    def predict_chunk(self, image, instructions, state, depth=None, steps=None, generator=None):
        self.texts += list(instructions)
        return super().predict_chunk(image, instructions, state, depth, steps, generator)


def test_eval_gives_each_policy_the_text_it_was_trained_with(scenes):
    from megohand.evaluate.evaluator import load_episode

    store, hand = scenes
    eps = [load_episode(store, r.dataset, r.episode) for r in store.episodes(split="test")]
    instructions = {e.instruction for e in eps}
    segments = {t for e in eps for _, _, t in e.segments if t}
    seg, task = TextRecorder("segment"), TextRecorder("task+segment")
    cfg = EvalConfig(window_stride=8, rollout_frames=16, batch_size=8, reliance=())
    evaluate_store(store, {"seg": lambda p, s: seg, "task": lambda p, s: task}, hand, cfg, log=lambda *a: None)
    assert seg.texts and set(seg.texts) <= segments | instructions
    assert not any(": " in t for t in seg.texts)
    assert task.texts and all(t in instructions or t.split(": ", 1)[0] in instructions and t.split(": ", 1)[1] in
                              segments for t in task.texts)
    assert any(": " in t for t in task.texts)


def test_task_table_by_hand():
    from megohand.evaluate.tables import task_table

    outs = {"m": [{"hit": True, "task": "push"}, {"hit": False, "task": "push"}, {"hit": True, "task": "lift"}],
            "n": [{"hit": False, "task": "lift"}]}
    assert task_table(outs).splitlines() == ["| method | lift | push |", "|---|---|---|",
                                             "| m | 1 / 1 (100 %) | 1 / 2 (50 %) |", "| n | 0 / 1 (0 %) | – |"]
    assert task_table({"m": [{"hit": True}]}) == ""


def test_task_metric_primitives():
    joints = torch.zeros(2, 21, 3)
    joints[:, 16:19] = torch.tensor([[0.0, 0.0, 0.0], [0.3, 0.0, 0.0], [0.0, 0.3, 0.0]])
    g = grip_point(joints)
    assert torch.allclose(g, torch.tensor([0.1, 0.1, 0.0]).expand(2, 3))
    centers = torch.tensor([[0.5, 0.5, 0.0], [0.12, 0.1, 0.0], [0.1, 0.2, 0.0]])
    assert closest_object(g[0], centers) == 1
    left = carried_to(torch.tensor([0.0, 0.0, 0.0]), torch.tensor([0.1, -0.2, 0.05]), torch.tensor([1.0, 1.0, 1.0]))
    assert torch.allclose(left, torch.tensor([1.1, 0.8, 1.05]))


def test_frame_cache_changes_nothing_and_evicts_oldest(scenes):
    from megohand.evaluate.evaluator import FrameCache

    store, hand = scenes
    methods = {"looks": lambda prev, s: NoisyStatic(0.5)}
    reps = [evaluate_store(store, methods, hand, EvalConfig(window_stride=8, rollout_frames=32, batch_size=8,
                                                            reliance=("rgb",), frame_cache_mb=mb), log=lambda *a: None)
            for mb in (0, 64)]
    assert reps[0]["results"] == reps[1]["results"]  # cached frames are the decoded frames, bit for bit
    c = FrameCache(max_bytes=250)
    a = lambda n: (np.zeros(n, np.uint8), None)  # noqa: E731
    c.put("x", a(100)), c.put("y", a(100)), c.get("x"), c.put("z", a(100))  # over budget: "y" (oldest use) goes
    assert set(c.items) == {"x", "z"} and c.bytes == 200
    c.put("huge", a(300))  # larger than the whole budget: not kept
    assert "huge" not in c.items
