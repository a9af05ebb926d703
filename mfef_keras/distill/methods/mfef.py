"""MFEF (Zou, Teng and Niu, arXiv 2206.08224): FFL's objective with multi-scale blocks and dual attention.

Each student's last-stage map goes through its own channel split-and-concatenate multi-scale block and
channel-then-spatial dual attention before the fusion head (Sec. 3.2-3.4 of the paper); the losses are FFL's.
The paper gives no sizes for the block and the attentions: the options ``splits`` (Res2Net's 4 groups),
``reduction`` and ``kernel_size`` (CBAM's 8 and 7) are this package's defaults.
"""

from __future__ import annotations

from mfef_keras.choices import ABLATIONS
from mfef_keras.distill.methods.base import MethodOption, register_method
from mfef_keras.distill.methods.ffl import FeatureFusionLearning


@register_method
class MultiScaleFeatureFusion(FeatureFusionLearning):
    """MFEF: FFL with multi-scale blocks and dual attention on each student's map; components can be ablated.

    Args:
        ablate: components to switch off: ``multi_scale``, ``attention`` (both), ``channel_attention``,
            ``spatial_attention``.
        splits: channel groups of the multi-scale block (option).
        reduction: channel-attention reduction ratio (option).
        kernel_size: spatial-attention kernel size (option).
        **kwargs: `OnlineMethod` arguments.

    Example:
        >>> MultiScaleFeatureFusion(ablate=["attention"], splits=2)._fusion_settings()["channel_attention"]
        False
    """

    name = "mfef"
    description = "multi-scale feature extraction and fusion: FFL with multi-scale blocks and dual attention"
    ablations = ABLATIONS
    # Checked here as the layers check them, so that a bad value is refused before a run starts.
    options = {
        "splits": MethodOption(4, "channel groups of the multi-scale block", lambda n: n >= 2, ">= 2"),
        "reduction": MethodOption(8, "channel-attention reduction ratio", lambda n: n >= 1, ">= 1"),
        "kernel_size": MethodOption(
            7, "spatial-attention kernel size", lambda n: n >= 1 and n % 2 == 1, "a positive odd integer"
        ),
    }

    def _fusion_settings(self) -> dict:
        off = set(self.ablate)
        return dict(
            multi_scale="multi_scale" not in off,
            channel_attention=not off & {"attention", "channel_attention"},
            spatial_attention=not off & {"attention", "spatial_attention"},
            splits=self.splits,
            reduction=self.reduction,
            kernel_size=self.kernel_size,
        )
