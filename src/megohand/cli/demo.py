"""``megohand demo``: the shipped checkpoint on held-out synthetic scenes, against the baselines.

Draws ``--episodes`` test-split episodes of the synthetic world (object-action-colour combinations
never seen in training, scenes from a seed never used for training), writes them to a small store
under ``--out``, evaluates the model and the static / constant-velocity baselines with the eval
protocols (per-window raw chunks, closed-loop rollouts with and without TOF), prints the table and
renders the model's closed-loop TOF rollout of the first scene over its frames (MP4 + PNG strip).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Demo:
    """Run the bundled demo: generate on held-out synthetic scenes, print metrics vs baselines, write an MP4 and a PNG."""

    out: Path = Path("megohand_demo")
    """Output folder (scene store, demo.md, demo.json, demo.mp4, demo.png)."""
    ckpt: Path | None = None
    """Checkpoint folder; None = the demo checkpoint shipped in the package."""
    episodes: int = 6
    """Held-out scenes to evaluate."""
    seed: int = 777
    """Seed of the demo scenes (training used other seeds; the held-out combos are the same)."""
    rollout_frames: int = 40
    """Frames per closed-loop rollout."""
    stride: int = 1
    """TOF query stride."""
    steps: int | None = None
    """Euler steps K (None = the checkpoint's default)."""
    random_init: bool = False
    """Use a freshly initialised tiny compact policy instead of a checkpoint (smoke test)."""
    device: str = "cpu"
    """Torch device."""
    threads: int = 1
    """Torch CPU threads (1 is fastest on a busy or 2-core machine; 0 = torch's default)."""
    mano_dir: Path | None = None
    """MANO folder or MANO-format file for the hand; default $MANO_MODEL_DIR, else the bundled open hand."""
    overwrite: bool = False
    """Write into a non-empty --out that holds no earlier demo (an earlier demo's files are replaced)."""

    def run(self) -> None:
        import numpy as np
        import torch

        from megohand.cli.eval import write_report
        from megohand.data.store import Store
        from megohand.evaluate.evaluator import (EvalConfig, baseline_factories, evaluate_store, load_episode,
                                                 task_outcome)
        from megohand.hand import load_hand_model
        from megohand.inference.policy import DEMO_CHECKPOINT, ModelPolicy, load_policy
        from megohand.inference.rollout import rollout, text_context
        from megohand.viz.compare import write_comparison

        from megohand import io
        from megohand.errors import check_input, check_min

        check_min(1, episodes=self.episodes, stride=self.stride, steps=self.steps)
        check_min(2, rollout_frames=self.rollout_frames)
        check_min(0, threads=self.threads)
        if self.ckpt is not None and not self.random_init:
            check_input(self.ckpt, "--ckpt", what="checkpoint")
        io.check_output_dir(self.out, self.overwrite, accept=lambda p: (p / "demo.json").is_file() or (p / "scenes").is_dir())
        t0 = time.perf_counter()
        if self.threads > 0:
            torch.set_num_threads(self.threads)
        hand = load_hand_model(self.mano_dir)
        if self.random_init:
            policy = ModelPolicy(tiny_random_policy(), self.device)
            ckpt_dir = None
        else:
            policy = load_policy(self.ckpt, self.device)
            ckpt_dir = DEMO_CHECKPOINT if self.ckpt is None else self.ckpt
        synth = synth_config(ckpt_dir, self.seed)
        root = self.out / "scenes"
        make_scenes(root, synth, self.episodes, hand)
        print(f"[{time.perf_counter() - t0:5.1f} s] {self.episodes} held-out scenes in {root}")

        cfg = EvalConfig(horizon=policy.horizon, window_stride=8, rollout_frames=self.rollout_frames,
                         stride=self.stride, steps=self.steps, batch_size=32)
        methods = {"model": lambda prev, stride: policy, **baseline_factories(policy.horizon)}
        store = Store(root)
        report = evaluate_store(store, methods, hand, cfg, log=lambda *a: None)
        report.update(hand_model=hand.name, checkpoint="random init (smoke test)" if self.random_init else str(ckpt_dir),
                      synth_config=dataclasses.asdict(synth))
        print(f"[{time.perf_counter() - t0:5.1f} s] evaluated")
        write_report(report, self.out, "demo", "MEgoHand demo: held-out synthetic scenes (unseen combinations)")

        scenes = [load_episode(store, r.dataset, r.episode) for r in store.episodes(split="test")]
        for line in scene_lines(scenes, report["task_outcomes"].get("rollout-tof", {}).get("model", [])):
            print(line)
        ep = pick_scene(scenes, self.rollout_frames)
        T = min(self.rollout_frames, ep.states.shape[0] - 2)

        def observe(k):
            img, dep = ep.observe([k + 1])
            return img, dep

        ctx = text_context(policy)
        res = rollout(policy, observe, lambda k: [ep.text_at(k + 1, ctx)], ep.states[1:2], T, stride=self.stride,
                      tof=True, steps=self.steps, generator=torch.Generator().manual_seed(0))
        p = res.params()
        with torch.no_grad():
            verts = hand(p.global_orient[0], p.hand_pose[0], p.betas[0], p.transl[0]).vertices.numpy()
        eo = ep.episode_obj
        frames = [np.asarray(eo.rgb(k + 1)) for k in range(T + 1)]
        write_comparison(frames, eo.K, hand.faces.numpy(), verts, true_vertices(eo, hand, 1, T + 2), ep.instruction,
                         self.out / "demo.mp4", self.out / "demo.png", ep.fps,
                         pred_label="model (closed loop, TOF)", true_label="ground truth")
        print(f"scene {ep.episode}: \"{ep.instruction}\" (model, TOF: cyan; ground truth: magenta)")
        outcome = task_outcome(hand, res.states[0], ep, first_frame=1)
        if outcome is not None:
            names = ep.facts.names
            target, got = names[ep.facts.target], names[outcome["closest"]]
            print(f"the model's hand reaches the {got}" + (" (the instructed object)" if outcome["hit"] else
                                                           f", not the instructed {target}")
                  + ("" if outcome["dest_cm"] is None else f"; leaves it {outcome['dest_cm']:.1f} cm from its destination"))
        print(f"[{time.perf_counter() - t0:5.1f} s] wrote {self.out / 'demo.mp4'} and {self.out / 'demo.png'}")


def scene_lines(eps: list, outcomes: list[dict]) -> list[str]:
    """One line per scene whose contact frame the rollout reached: its instruction and the object the model's
    hand came to (``outcomes``: the report's ``task_outcomes`` rows of the model, closed loop with TOF)."""
    by_name = {(e.dataset, e.episode): e for e in eps}
    lines = []
    for o in outcomes:
        e = by_name[(o["dataset"], o["episode"])]
        lines.append(f"  scene {e.episode}: \"{e.instruction}\" -> the {o['reached_object']}"
                     + (" (the instructed object)" if o["hit"] else f", not the {o['target_object']}"))
    return [f"closed loop + TOF, {sum(o['hit'] for o in outcomes)} of {len(outcomes)} scenes reach the instructed "
            "object:", *lines] if outcomes else []


def pick_scene(eps: list, rollout_frames: int):
    """The scene to render: the first whose instructed object is touched (and, if any, put on its destination) within
    the rollout and that holds another object of the instructed one's shape or colour, so that only the picture
    says which one to take; else the first."""
    def matters(e) -> bool:
        f = e.facts
        if f is None or f.contact_frame is None or f.contact_frame > rollout_frames:
            return False
        objs = e.episode_obj.meta.extra["objects"]
        t = objs[f.target]
        return any(i != f.target and (o["shape"] == t["shape"] or o["color"] == t["color"]) for i, o in enumerate(objs))

    return next((e for e in eps if matters(e)), eps[0])


def true_vertices(episode, hand, start: int, stop: int):
    """(stop - start, V, 3) camera-frame vertices of the stored right hand, NaN where a frame is not valid."""
    import numpy as np
    import torch

    h = episode.hands("right")
    p = [torch.tensor(np.asarray(h[k][start:stop], np.float32)) for k in ("global_orient", "hand_pose", "betas", "transl")]
    with torch.no_grad():
        v = hand(*p).vertices.numpy()
    v[~np.asarray(h["valid"][start:stop], bool)] = np.nan
    return v


def tiny_random_policy():
    """A freshly initialised small compact policy (untrained; for smoke tests before a checkpoint exists)."""
    from megohand.models import MEgoHandPolicy, PolicyConfig

    c = PolicyConfig.compact()
    c = dataclasses.replace(
        c,
        backbone=c.backbone.replace(width=64, fusion_layers=1, image_size=64),
        dit=dataclasses.replace(c.dit, width=64, num_layers=2, num_heads=4, output_dim=64, head_hidden=64),
    )
    import torch

    torch.manual_seed(0)
    return MEgoHandPolicy(c)


def synth_config(ckpt_dir: Path | None, seed: int):
    """The synthetic world the checkpoint was trained on (``synth.json`` beside it, written by
    scripts/train_demo.py; one without a "world" was written before the grounded world existed: classic),
    with the demo's own scene seed; defaults otherwise."""
    from megohand.data.synthetic import SynthConfig

    d = {}
    if ckpt_dir is not None and (Path(ckpt_dir) / "synth.json").is_file():
        d = {"world": "classic", **json.loads((Path(ckpt_dir) / "synth.json").read_text())}
    names = {f.name for f in dataclasses.fields(SynthConfig)}
    return SynthConfig(**{**{k: v for k, v in d.items() if k in names}, "seed": seed})


def make_scenes(root: Path, cfg, n: int, hand) -> None:
    """Write the first ``n`` test-split episodes of world ``cfg`` into a fresh store at ``root``."""
    import shutil

    import numpy as np

    from megohand.data.store import StoreWriter
    from megohand.data.synthetic import generate_episode, render_episode
    from megohand.data.synthetic.build import episode_meta
    from megohand.data.synthetic.world import episode_split, make_renderer

    shutil.rmtree(root, ignore_errors=True)
    writer = StoreWriter(root)
    renderer = make_renderer(cfg.width, cfg.height)
    found, i = 0, -1
    while found < n:
        i += 1
        if i > 200 * n:
            raise RuntimeError(f"no test-split episodes in the first {i} of seed {cfg.seed}; check test_fraction")
        if episode_split(cfg, np.random.default_rng([cfg.seed, i])) != "test":  # the episode's first draw
            continue
        ep = generate_episode(cfg, i, hand)
        assert ep.split == "test"
        found += 1
        frames = render_episode(ep, hand, renderer)
        writer.write_episode(episode_meta(ep, cfg, hand), hands={"right": ep.hands}, rgb=frames["rgb"],
                             depth=frames["depth"], T_cam_from_world=ep.T_cam_from_world)
