"""Make the committed example clip: one episode of the synthetic world rendered at 640x480 (ours, Apache-2.0).

Writes ``examples/synthetic_clip.mp4`` (H.264) and ``examples/synthetic_clip.json`` (its instruction and true
intrinsics: the sidecar that ``megohand label`` reads, and an intrinsics file for ``megohand generate``).

Usage::

    python scripts/make_example.py [--seed 2026] [--episode 7] [--frames 48]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--episode", type=int, default=7)
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--out", type=Path, default=ROOT / "examples" / "synthetic_clip.mp4")
    args = ap.parse_args()

    from megohand.data.synthetic import SynthConfig, generate_episode
    from megohand.data.synthetic.world import make_renderer, render_episode
    from megohand.hand import load_hand_model
    from megohand.viz.video import write_mp4

    hand = load_hand_model(None, side="right")
    cfg = SynthConfig(seed=args.seed, width=640, height=480)
    ep = generate_episode(cfg, args.episode, hand)
    rgb = render_episode(ep, hand, make_renderer(cfg.width, cfg.height))["rgb"][: args.frames]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_mp4(rgb, args.out, cfg.fps, crf=26)
    side = {"text": ep.instruction, "K": ep.K.tolist(), "fps": cfg.fps,
            "made_by": f"python scripts/make_example.py --seed {args.seed} --episode {args.episode} "
                       f"--frames {args.frames} (the synthetic world, megohand's own, Apache-2.0)"}
    args.out.with_suffix(".json").write_text(json.dumps(side, indent=1) + "\n")
    print(f"wrote {args.out} ({len(rgb)} frames, {args.out.stat().st_size / 1024:.0f} KiB): {ep.instruction!r}")


if __name__ == "__main__":
    main()
