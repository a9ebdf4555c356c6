"""Evidence: what defenses look at, computed once per run and shared by every detector.

Detectors never run a network themselves for standard representations: they ask the Evidence for
activations by layer name, LGM log-likelihoods, raw pixels, or any other named representation
(Monte-Carlo probabilities, LRP heatmaps...) through :meth:`Evidence.cached`, so each is computed
once no matter how many detectors read it. Tests can fill the cache with synthetic tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Literal

import torch
from torch import Tensor

from poisonlab.data.dataset import ImageDataset
from poisonlab.device import pick_device
from poisonlab.errors import ConfigError
from poisonlab.models.activations import capture_activations
from poisonlab.models.network import Network

Part = Literal["data", "holdout"]


class Evidence:
    """A suspect data set, the model trained on it, an optional clean held-out set, and a cache.

    Parameters
    ----------
    data : ImageDataset
        The suspect training set, with its claimed labels.
    model : Network or None
        A model trained on ``data``; detectors that need one say so.
    holdout : ImageDataset or None
        Clean held-out data (DeepFeatures fits its densities on it; target-FPR thresholds use it).
    device : str or torch.device or None
        Where representations are computed (default: CUDA when present).
    batch_size : int
    """

    def __init__(
        self,
        data: ImageDataset,
        model: Network | None = None,
        *,
        holdout: ImageDataset | None = None,
        device: torch.device | str | None = None,
        batch_size: int = 256,
    ) -> None:
        self.data = data
        self.model = model
        self.holdout = holdout
        self.device = pick_device(device)
        self.batch_size = batch_size
        self._cache: dict[Hashable, Any] = {}
        if model is not None:
            model.to(self.device)  # a no-op when it is already there; train/eval mode is untouched

    @property
    def num_classes(self) -> int:
        """Number of classes of the suspect data."""
        return self.data.num_classes

    def dataset(self, part: Part = "data") -> ImageDataset:
        """The suspect data or the clean held-out set (a clear error when there is none)."""
        if part == "data":
            return self.data
        if self.holdout is None:
            raise ConfigError("this defense needs a clean held-out set (--holdout), none given")
        return self.holdout

    def labels(self, part: Part = "data") -> Tensor:
        """Claimed labels, int64 (N,)."""
        return self.dataset(part).labels

    def require_model(self) -> Network:
        """The model, or a clear error for defenses that need one."""
        if self.model is None:
            raise ConfigError("this defense needs a model trained on the suspect data (--model)")
        return self.model

    def cached(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """Return the value stored under ``key``, computing and storing it on first use."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def put(self, key: Hashable, value: Any) -> None:
        """Store a precomputed representation (used by tests and by callers that have one)."""
        self._cache[key] = value

    def activations(self, layer: str, part: Part = "data", *, pool: bool = True) -> Tensor:
        """Outputs of ``layer`` (conv maps average-pooled when ``pool``), float32 (N, D), CPU."""

        def compute() -> Tensor:
            model = self.require_model()
            images = self.dataset(part).images
            return capture_activations(
                model, images, [layer], batch_size=self.batch_size, device=self.device, pool=pool
            )[layer]

        return self.cached(("activations", layer, part, pool), compute)

    def features(self, part: Part = "data") -> Tensor:
        """Penultimate features f(x), (N, feature_dim)."""
        return self.activations(self.require_model().feature_layer, part, pool=False)

    def lgm_log_likelihood(self, part: Part = "data") -> Tensor:
        """log p(f(x) | k) for every class under an LGM head, float64 (N, K)."""

        def compute() -> Tensor:
            model = self.require_model()
            if not model.is_lgm:
                raise ConfigError(
                    "this defense needs a model trained with the LGM loss (--loss lgm)"
                )
            head = model.head.to(self.device)
            with torch.no_grad():
                features = self.features(part).to(self.device)
                return head.log_likelihood(features).double().cpu()  # type: ignore[operator]

        return self.cached(("lgm_log_likelihood", part), compute)

    def pixels(self, part: Part = "data") -> Tensor:
        """Raw images flattened to (N, C·H·W), float32."""
        return self.cached(("pixels", part), lambda: self.dataset(part).images.flatten(1))
