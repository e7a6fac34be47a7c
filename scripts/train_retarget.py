"""Train the inverse-MANO retargeting network shipped for the bundled open hand.

Writes ``src/megohand/assets/retarget/open_hand/{config.json,model.safetensors}`` (float16 weights),
the default of ``Retargeter.from_pretrained(None)``. The held-out errors are measured on the saved
(float16-rounded) weights and stored in the config's ``info``. On a 2-core CPU the defaults take
about 10-15 minutes::

    nohup python scripts/train_retarget.py > /tmp/train_retarget.log 2>&1 &

For real MANO use ``megohand retarget train --mano-dir DIR --out OUT`` (same training).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "src" / "megohand" / "assets" / "retarget" / "open_hand"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--mano-dir", type=Path, default=None, help="hand model (default: the bundled open hand)")
    ap.add_argument("--steps", type=int, default=18000)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--noise", type=float, default=0.005,
                    help="input joint noise [m]: per-hand std ~ U(0, noise) (robustness to real, off-model joints)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (1 is faster on a loaded 2-core machine)")
    ap.add_argument("--full", action="store_true", help="store float32 weights (default float16)")
    ap.add_argument("--log-every", type=int, default=500)
    args = ap.parse_args()

    from megohand.hand import load_hand_model
    from megohand.hand.retarget import (
        RetargetConfig,
        Retargeter,
        evaluate,
        load_network,
        save_network,
        train_inverse_mano,
    )

    torch.set_num_threads(args.threads)
    hand = load_hand_model(args.mano_dir)
    print(f"hand model {hand.name} ({hand.source}); {args.steps} steps x {args.batch_size}, "
          f"MLP {args.hidden} x {args.blocks}, {args.threads} threads", flush=True)
    t0 = time.time()
    net = train_inverse_mano(hand, RetargetConfig(hidden=args.hidden, blocks=args.blocks), steps=args.steps,
                             batch_size=args.batch_size, lr=args.lr, seed=args.seed, noise=args.noise,
                             log_every=args.log_every)
    train_s = time.time() - t0
    save_network(net, args.out, half=not args.full)
    net = load_network(args.out)  # evaluate what is shipped
    ev = {f"refine_{k}": evaluate(Retargeter(net, mano_dir=args.mano_dir), n=512, seq_len=32, refine_steps=k)
          for k in (0, 100)}
    net.config.info = {
        "trained_by": "scripts/train_retarget.py",
        "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed, "switch": 0.5,
        "input_noise_m": args.noise,
        "w1": 1.0, "w2": 1.0, "train_seconds": round(train_s, 1), "threads": args.threads,
        "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "weights": "float32" if args.full else "float16",
        "held_out": {
            "hands": ev["refine_0"]["hands"],
            "joint_error_mm_network": round(ev["refine_0"]["joint_error_mm_network"], 3),
            "joint_error_mm_refined_100": round(ev["refine_100"]["joint_error_mm_refined"], 3),
        },
    }
    save_network(net, args.out, half=not args.full)
    size = sum(p.stat().st_size for p in args.out.iterdir())
    print(json.dumps(net.config.info, indent=1))
    print(f"wrote {args.out} ({size / 1e6:.2f} MB) in {train_s / 60:.1f} min of training", flush=True)


if __name__ == "__main__":
    main()
