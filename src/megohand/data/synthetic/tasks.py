"""What the hand does: tasks, their instruction text, and the splits by unseen combinations.

A *combo* is ``(shape, color, task)`` of the target object. The test split holds out a seeded set
of combos (every shape, colour and task, and every pair of them, still appears in train), so a
test episode asks for a combination never seen in training.
"""

from __future__ import annotations

import itertools

import numpy as np

from megohand.data.synthetic.scene import COLORS
from megohand.data.synthetic.shapes import SHAPES

TASKS = ("pick_place", "move", "lift", "push", "rotate")
SPLITS = ("train", "val", "test")

# World directions (x right, y away from the person) as seen by the person at the table.
RELATIONS = {"left of": (-1.0, 0.0), "right of": (1.0, 0.0), "in front of": (0.0, -1.0), "behind": (0.0, 1.0)}
MOVE_DIRECTIONS = {"to the left": (-1.0, 0.0), "to the right": (1.0, 0.0), "forward": (0.0, 1.0),
                   "toward me": (0.0, -1.0)}
PUSH_DIRECTIONS = {"forward": (0.0, 1.0), "to the left": (-1.0, 0.0), "to the right": (1.0, 0.0)}
ROTATIONS = {"clockwise": -1.0, "counterclockwise": 1.0}  # sign of the yaw about +z (up)

Combo = tuple[str, str, str]


def all_combos() -> list[Combo]:
    """Every (shape, color, task), in a fixed order."""
    return list(itertools.product(SHAPES, COLORS, TASKS))


def combo_split(split_seed: int = 0, holdout_fraction: float = 0.2) -> tuple[list[Combo], list[Combo]]:
    """(train_combos, test_combos): a seeded ``holdout_fraction`` of the combos is held out for
    test, such that every pair (shape, color), (shape, task), (color, task) keeps a train combo."""
    combos = all_combos()
    rng = np.random.default_rng([split_seed, 7331])
    n_test = int(round(holdout_fraction * len(combos)))
    for _ in range(1000):
        test_idx = set(rng.choice(len(combos), size=n_test, replace=False).tolist())
        train = [c for i, c in enumerate(combos) if i not in test_idx]
        if all(_pairs(train) >= _pairs([c]) for c in combos):
            return train, [c for i, c in enumerate(combos) if i in test_idx]
    raise RuntimeError(f"could not hold out {holdout_fraction:.0%} of the combos keeping all pairs seen")


def _pairs(combos: list[Combo]) -> set:
    return {(k, v) for s, c, t in combos for k, v in ((0, (s, c)), (1, (s, t)), (2, (c, t)))}


def instruction(task: str, target: str, rng: np.random.Generator, **params) -> str:
    """One phrasing of the task on ``target`` (e.g. "red cylinder"). ``params``: ``relation`` and
    ``reference`` (pick_place), ``direction`` (move, push), ``rotation`` (rotate)."""
    t = f"the {target}"
    if task == "pick_place":
        rel, ref = params["relation"], f"the {params['reference']}"
        options = [f"pick up {t} and put it {rel} {ref}", f"place {t} {rel} {ref}",
                   f"move {t} so that it is {rel} {ref}"]
    elif task == "move":
        d = params["direction"]
        options = [f"move {t} {d}", f"pick up {t} and move it {d}", f"carry {t} {d}"]
    elif task == "lift":
        options = [f"lift {t}", f"pick up {t} and put it back down", f"raise {t} and set it down again"]
    elif task == "push":
        d = params["direction"]
        options = [f"push {t} {d}", f"slide {t} {d} with your fingers", f"nudge {t} {d}"]
    elif task == "rotate":
        r = params["rotation"]
        options = [f"rotate {t} {r}", f"turn {t} {r}", f"twist {t} {r}"]
    else:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    return str(options[int(rng.integers(len(options)))])


def phase_text(phase: str, target: str, params: dict | None = None) -> str:
    """Segment text of one motion phase (e.g. "reach" -> "reach for the red cylinder"). With the task's ``params``
    (``plan_task``), the phases that carry the task's choice name it: "move the red cylinder behind the blue cube"
    (or "... to the left"), "push the red cylinder forward", "rotate the red cylinder clockwise"."""
    p = params or {}
    where = (f" {p['relation']} the {p['reference']}" if "relation" in p
             else f" {p['direction']}" if "direction" in p else "")
    if phase == "move":
        return f"move the {target}{where}"
    if phase == "push":
        return f"push the {target}{where}"
    if phase == "rotate" and "rotation" in p:
        return f"rotate the {target} {p['rotation']}"
    return {
        "idle": "rest", "reach": f"reach for the {target}", "grasp": f"grasp the {target}",
        "lift": f"lift the {target}", "place": f"put the {target} down",
        "release": f"release the {target}", "retract": "move the hand back", "hold": f"hold the {target}",
        "approach": f"put the fingers against the {target}",
        "rotate": f"rotate the {target}",
    }[phase]
