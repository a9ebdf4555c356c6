"""Explanations as data: relevance heatmaps turned into point clouds, compared with GW distances.

Submodules (imported on demand; nothing here pulls in zennit or torchvision):

- ``point_cloud``: heatmaps → padded metric-measure spaces (``heatmaps_to_clouds``);
- ``gromov``: batched entropic Gromov–Wasserstein with the square loss (``entropic_gw``);
- ``gw_barycenter``: batched GW barycenters (``gw_barycenter``);
- ``gw_kmeans``: GW k-means++ for Heatmap Clustering (``gw_kmeans``).
"""

from __future__ import annotations
