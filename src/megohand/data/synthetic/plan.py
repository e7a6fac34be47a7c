"""Keyframe scripts of the five tasks on a sampled scene (pure functions of the rng)."""

from __future__ import annotations

import numpy as np

from megohand.data.synthetic.motion import GripGeometry, Key
from megohand.data.synthetic.scene import SceneObject, is_free
from megohand.data.synthetic.tasks import MOVE_DIRECTIONS, PUSH_DIRECTIONS, RELATIONS, ROTATIONS


def heading_yaw(u) -> float:
    """Yaw [rad] whose finger heading (-sin yaw, cos yaw) is the unit xy vector ``u``."""
    return float(np.arctan2(-u[0], u[1]))


def plan_task(
    rng: np.random.Generator, task: str, objects: list[SceneObject], geom: GripGeometry
) -> tuple[list[Key], dict] | None:
    """Keyframes of ``task`` on ``objects[0]`` and the task parameters (JSON-able: ``relation``,
    ``reference``, ``direction``, ``rotation``, ``destination`` ...). None if the sampled scene
    does not allow the task (no free destination): the caller draws a new scene."""
    target, others = objects[0], objects[1:]
    speed = rng.uniform(0.85, 1.15)
    keys: list[Key] = []

    def add(dt: float, G, yaw: float, pitch: float, closure: float, phase: str, attach: int = -1):
        t = keys[-1].t + dt * speed if keys else 0.0
        keys.append(Key(t, np.asarray(G, dtype=np.float64), float(yaw), float(pitch), float(closure), phase, attach))

    # Start: the hand rests near the person, to the right, fingers forward.
    G0 = np.array([rng.uniform(0.08, 0.18), rng.uniform(-0.08, -0.02), rng.uniform(0.10, 0.14)])
    add(0.0, G0, rng.uniform(0.1, 0.5), rng.uniform(0.25, 0.45), rng.uniform(0.1, 0.25), "idle")
    add(rng.uniform(0.05, 0.2), G0, keys[0].yaw, keys[0].pitch, keys[0].closure, "idle")
    c = np.array([target.xy[0], target.xy[1], 0.0])
    top = target.height
    pitch = rng.uniform(0.25, 0.45)
    params: dict = {}

    def reach_and_grasp(yaw: float) -> None:
        pre = c + [0.0, 0.0, top + rng.uniform(0.05, 0.08)]
        dist = np.linalg.norm(pre - keys[-1].G)
        add(0.3 + 0.6 * dist, pre, yaw, pitch, 0.0, "reach")
        add(0.2, c + [0.0, 0.0, top + 0.004], yaw, pitch, 0.0, "reach")
        closure = float(np.clip(0.95 - 8.0 * target.half_width, 0.5, 0.8))
        add(0.2, keys[-1].G, yaw, pitch, closure, "grasp", attach=0)

    def release_and_retract() -> None:
        last = keys[-1]
        keys[-1].attach = -1
        add(0.15, last.G, last.yaw, last.pitch, 0.05, "release")
        back = last.G + [rng.uniform(0.02, 0.08), rng.uniform(-0.12, -0.06), rng.uniform(0.05, 0.08)]
        add(0.35, back, rng.uniform(0.1, 0.4), rng.uniform(0.25, 0.45), rng.uniform(0.1, 0.2), "retract")

    carry_h = max([0.07] + [o.height + 0.025 for o in others])
    if task in ("pick_place", "move"):
        if task == "pick_place":
            options = [(ref, rel) for ref in others for rel in RELATIONS]
            rng.shuffle(options)
            gaps = rng.uniform(0.02, 0.05, size=len(options))
            dests = [np.asarray(ref.xy) + np.asarray(RELATIONS[rel]) * (ref.radius + target.radius + g)
                     for (ref, rel), g in zip(options, gaps)]
        else:
            options = list(MOVE_DIRECTIONS)
            rng.shuffle(options)
            dists = rng.uniform(0.10, 0.15, size=len(options))
            dests = [np.asarray(target.xy) + np.asarray(MOVE_DIRECTIONS[d]) * s for d, s in zip(options, dists)]
        # a free spot, far enough that the object visibly moves; for pick_place the relation must
        # not hold already (target not within 45 degrees of that direction from the reference)
        def holds(option) -> bool:
            if task != "pick_place":
                return False
            ref, rel = option
            v = np.asarray(target.xy) - np.asarray(ref.xy)
            return float(v @ np.asarray(RELATIONS[rel])) > np.cos(np.pi / 4) * float(np.linalg.norm(v))

        free = [i for i, d in enumerate(dests) if is_free(d, target.radius, others, margin=0.015)
                and np.linalg.norm(d - np.asarray(target.xy)) > 0.08 and not holds(options[i])]
        if not free:
            return None
        choice, dest = options[free[0]], dests[free[0]]
        if task == "pick_place":
            params = {"reference": choice[0].name, "relation": choice[1], "reference_index": objects.index(choice[0])}
        else:
            params = {"direction": choice}
        params["destination"] = [float(dest[0]), float(dest[1])]
        yaw = rng.uniform(-0.2, 0.5)
        reach_and_grasp(yaw)
        g = keys[-1].G
        add(0.3, g + [0, 0, carry_h], yaw, pitch, keys[-1].closure, "lift", attach=0)
        moved = np.array([dest[0], dest[1], g[2] + carry_h])
        yaw2 = yaw + rng.uniform(-0.3, 0.3)
        add(0.3 + 0.8 * np.linalg.norm(moved - keys[-1].G), moved, yaw2, pitch, keys[-1].closure, "move", attach=0)
        add(0.25, [dest[0], dest[1], g[2]], yaw2, pitch, keys[-1].closure, "place", attach=0)
        release_and_retract()
    elif task == "lift":
        yaw = rng.uniform(-0.2, 0.5)
        reach_and_grasp(yaw)
        g, cl = keys[-1].G, keys[-1].closure
        h = rng.uniform(0.08, 0.14)
        params = {"height": float(h)}
        add(0.35, g + [0, 0, h], yaw, pitch, cl, "lift", attach=0)
        add(rng.uniform(0.1, 0.3), g + [0, 0, h], yaw, pitch, cl, "hold", attach=0)
        add(0.3, g, yaw, pitch, cl, "place", attach=0)
        release_and_retract()
    elif task == "rotate":
        name = list(ROTATIONS)[int(rng.integers(len(ROTATIONS)))]
        angle = ROTATIONS[name] * rng.uniform(np.deg2rad(60), np.deg2rad(100))
        params = {"rotation": name, "angle": float(angle)}
        yaw = 0.2 - 0.5 * angle + rng.uniform(-0.15, 0.15)
        reach_and_grasp(yaw)
        add(0.45, keys[-1].G, yaw + angle, pitch, keys[-1].closure, "rotate", attach=0)
        release_and_retract()
    elif task == "push":
        options = list(PUSH_DIRECTIONS)
        rng.shuffle(options)
        dist = rng.uniform(0.07, 0.12)
        ok = [d for d in options
              if all(is_free(np.asarray(target.xy) + np.asarray(PUSH_DIRECTIONS[d]) * dist * f, target.radius,
                             others, margin=0.01) for f in (0.33, 0.66, 1.0))]
        if not ok:
            return None
        u = np.array(PUSH_DIRECTIONS[ok[0]] + (0.0,))
        params = {"direction": ok[0], "distance": float(dist)}
        yaw, p_push, cl = heading_yaw(u), rng.uniform(0.5, 0.7), rng.uniform(0.4, 0.55)
        contact = c - u * (target.radius + 0.05) + [0, 0, min(0.5 * top, 0.035) + 0.035]
        pre = contact - u * 0.05 + [0, 0, 0.05]
        dist_reach = np.linalg.norm(pre - keys[-1].G)
        add(0.3 + 0.6 * dist_reach, pre, yaw, p_push, cl, "reach")
        add(0.2, contact, yaw, p_push, cl, "approach", attach=0)
        add(0.35 + 1.5 * dist, contact + u * dist, yaw, p_push, cl, "push", attach=0)
        keys[-1].attach = -1
        back = keys[-1].G + [rng.uniform(0.0, 0.06), rng.uniform(-0.12, -0.06), rng.uniform(0.05, 0.08)]
        add(0.35, back, rng.uniform(0.1, 0.4), rng.uniform(0.25, 0.45), rng.uniform(0.1, 0.2), "retract")
    else:
        raise ValueError(f"unknown task {task!r}")
    return keys, params
