"""The synthetic egocentric hand-object world (dataset "synthetic").

A table with 3-5 primitive objects of distinct colours, a head camera with ego-motion, and the
right hand doing one scripted task (pick & place, move, lift, push, rotate) on the object named
in the instruction. Modules: ``shapes`` (meshes), ``scene`` (objects, camera), ``tasks`` (task
list, instruction text, splits by unseen combos), ``motion`` (keyframes -> hand parameters),
``plan`` (task scripts), ``world`` (one episode + rendering), ``build`` (writing the store).
"""

from megohand.data.synthetic.build import synthesize
from megohand.data.synthetic.tasks import TASKS, all_combos, combo_split
from megohand.data.synthetic.world import DATASET, SynthConfig, SyntheticEpisode, generate_episode, render_episode

__all__ = ["DATASET", "TASKS", "SynthConfig", "SyntheticEpisode", "all_combos", "combo_split", "generate_episode",
           "render_episode", "synthesize"]
