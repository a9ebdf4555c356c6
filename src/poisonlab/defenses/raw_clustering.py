"""Raw-pixel clustering: the model-free baseline of Schulth et al. 2022 (Table 3, §6.2).

Per claimed class: flatten the images, reduce them with PCA or FastICA, split them with 2-means
(k-means++), and call the smaller cluster poisoned. It asks whether the poisons are visible in the
pixels at all, without a model; Schulth et al. 2022 reports about two-thirds accuracy on GTSRB with
a 3×3
sticker at 33% (TPR 51.5% with PCA, 32.0% with FastICA), i.e. a small trigger barely moves the
dominant pixel directions.

The score is the separation score of :mod:`poisonlab.defenses.clustering`, so AUROC exists.
Schulth et al. 2022 does not give the number of components ("a few"); we use 10, as for Activation
Clustering. Limits: pixel-space clusters follow pose, brightness and background long before a
small trigger; expect this baseline to be weak except for large or bright triggers.
"""

from __future__ import annotations

from torch import Tensor

from poisonlab.defenses.base import register_detector
from poisonlab.defenses.clustering import TwoMeansDetector
from poisonlab.defenses.evidence import Evidence, Part


@register_detector("raw-clustering")
class RawClustering(TwoMeansDetector):
    """2-means on reduced raw pixels per class; no model needed.

    Parameters
    ----------
    reduce : {"pca", "fastica", "none"}, default "pca"
        Schulth et al. 2022 Table 3 reports both; PCA did better there.
    n_components, rule, size_threshold, silhouette_threshold, n_init, select, axis_splits,
        confirm, seed
        See :class:`~poisonlab.defenses.clustering.TwoMeansDetector`.
    threshold, classes
        See :class:`~poisonlab.defenses.base.Detector`.
    """

    name = "raw-clustering"
    needs_model = False

    def _representation(self, evidence: Evidence, part: Part) -> Tensor:
        """Flattened images (N, C·H·W)."""
        return evidence.pixels(part)
