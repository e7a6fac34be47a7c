"""megohand.models: the MEgoHand policy (cerebrum + cerebellum), its presets and building blocks.

``from megohand.models import MEgoHandPolicy, PolicyConfig``; presets ``PolicyConfig.paper()`` / ``.compact()``.
The policy class is imported lazily so that configuration (and ``--help``) does not import torch.
"""

from megohand.models.config import PRESETS, BackboneConfig, DepthConfig, DiTConfig, FlowConfig, PolicyConfig

__all__ = ["MEgoHandPolicy", "PolicyConfig", "BackboneConfig", "DepthConfig", "DiTConfig", "FlowConfig", "PRESETS"]


def __getattr__(name):
    if name == "MEgoHandPolicy":
        from megohand.models.policy import MEgoHandPolicy

        return MEgoHandPolicy
    raise AttributeError(name)
