"""MFEF (Zou, Teng and Niu, arXiv 2206.08224): FFL's objective with multi-scale blocks and dual attention.

Each student's last-stage map goes through its own channel split-and-concatenate multi-scale block and
channel-then-spatial dual attention before the fusion head (Sec. 3.2-3.4 of the paper); the losses are FFL's.
"""

from __future__ import annotations

from mfef_keras.choices import ABLATIONS
from mfef_keras.distill.methods.base import register_method
from mfef_keras.distill.methods.ffl import FeatureFusionLearning


@register_method
class MultiScaleFeatureFusion(FeatureFusionLearning):
    """MFEF: FFL with multi-scale blocks and dual attention on each student's map; components can be ablated.

    Args:
        ablate: components to switch off: ``multi_scale``, ``attention`` (both), ``channel_attention``,
            ``spatial_attention``.
        **kwargs: `OnlineMethod` arguments.

    Example:
        >>> MultiScaleFeatureFusion(ablate=["attention"])._components()["channel_attention"]
        False
    """

    name = "mfef"
    description = "multi-scale feature extraction and fusion: FFL with multi-scale blocks and dual attention"
    ablations = ABLATIONS

    def _components(self) -> dict:
        off = set(self.ablate)
        return dict(
            multi_scale="multi_scale" not in off,
            channel_attention=not off & {"attention", "channel_attention"},
            spatial_attention=not off & {"attention", "spatial_attention"},
        )
