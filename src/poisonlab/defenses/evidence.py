"""Evidence: what defenses look at, computed once per run and shared by every detector.

Detectors never run a network themselves for standard representations: they ask the Evidence for
activations by layer name, LGM log-likelihoods, raw pixels, or any other named representation
(Monte-Carlo probabilities, LRP heatmaps...) through :meth:`Evidence.cached`, so each is computed
once no matter how many detectors read it. Tests can fill the cache with synthetic tensors.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from poisonlab.data.dataset import DATASET, ImageDataset
from poisonlab.device import pick_device
from poisonlab.errors import ConfigError, DataError
from poisonlab.models.activations import capture_representations
from poisonlab.models.network import NETWORK, Network
from poisonlab.validation import POSITIVE_INT, check_param

if TYPE_CHECKING:
    from poisonlab.train.config import TrainConfig

Part = Literal["data", "holdout"]


class MissingInput(ConfigError):
    """The Evidence lacks what a defense reads (a model, an LGM head, a clean held-out set): "Evidence
    needs ..." from the Evidence, "deep-features needs ..." once :meth:`Detector.fit` names itself."""

    def __init__(self, need: str, *, owner: str = "Evidence") -> None:
        super().__init__(f"{owner} needs {need}")
        self.need, self.owner = need, owner

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled (a worker process) and copied as its need and owner: an exception's default,
        its message as the one argument, read "Evidence needs deep-features needs ..."."""
        return functools.partial(MissingInput, owner=self.owner), (self.need,)

    def by(self, owner: str) -> MissingInput:
        """The same need, said by ``owner`` (a detector's name)."""
        return MissingInput(self.need, owner=owner)


class Evidence:
    """A suspect data set, the model trained on it, an optional clean held-out set, and a cache.

    Parameters
    ----------
    data : ImageDataset
        The suspect training set, with its claimed labels.
    model : Network or None
        A model trained on ``data``; detectors that need one say so.
    holdout : ImageDataset or None
        Clean held-out data (DeepFeatures fits its densities on it; target-FPR thresholds and
        the verdicts' held-out check, :mod:`poisonlab.defenses.holdout_check`, use it).
    device : str or torch.device or None
        Where representations are computed (default: CUDA when present).
    batch_size : int
    recipe : TrainConfig or None
        How ``model`` was trained, when known (a scan records the recipe of the model it trained).
        A defense that trains a fresh copy of the architecture (activation clustering's
        exclusionary reclassification) repeats it; without it, it uses the architecture's default
        recipe.
    retrain_epochs : int or None
        Epochs of such a retraining when the detector sets none (None: those of the recipe). A
        scan of 20,000 images or more sets 1 (:func:`poisonlab.train.recipes.scan_retrain_epochs`).
    retrain_images : int or None
        At most this many of the kept images train such a retraining, a random subset seeded by
        the retraining's seed (None: all of them). A scan of 20,000 images or more sets 20,000
        (:func:`poisonlab.train.recipes.scan_retrain_images`).

    The model is borrowed, never changed: it stays on its device and every module keeps its
    train/eval mode. When it is on another device than ``device``, detectors work on a private
    copy there (:meth:`require_model`).

    Raises
    ------
    DataError
        When ``holdout`` holds images of another shape than ``data``, or more classes.
    ConfigError
        When ``model`` was built for another image shape, or for fewer classes than ``data``.
    """

    def __init__(
        self,
        data: ImageDataset,
        model: Network | None = None,
        *,
        holdout: ImageDataset | None = None,
        device: torch.device | str | None = None,
        batch_size: int = 256,
        recipe: TrainConfig | None = None,
        retrain_epochs: int | None = None,
        retrain_images: int | None = None,
    ) -> None:
        check_param("Evidence", "data", data, [DATASET])
        check_param("Evidence", "model", model, [NETWORK, None])
        check_param("Evidence", "holdout", holdout, [DATASET, None])
        check_param("Evidence", "retrain_epochs", retrain_epochs, [POSITIVE_INT, None])
        check_param("Evidence", "retrain_images", retrain_images, [POSITIVE_INT, None])
        _check_fits(data, model, holdout)
        self.data = data
        self.model = model
        self.recipe = recipe
        self.retrain_epochs = retrain_epochs
        self.retrain_images = retrain_images
        self.holdout = holdout
        self.device = pick_device(device)
        self.batch_size = batch_size
        self._cache: dict[Hashable, Any] = {}
        self._working: Network | None = None  # the model on self.device (a copy if need be)

    def __repr__(self) -> str:
        """The data, the model's architecture and head, the held-out set and the device, e.g.
        ``Evidence(ImageDataset('digits', ...), model cnn-small (softmax), holdout=None, device
        cpu)``."""
        model = "None"
        if self.model is not None:
            head = "lgm" if self.model.is_lgm else "softmax"
            model = f"{self.model.config.arch} ({head})"
        return (
            f"Evidence({self.data!r}, model {model}, holdout={self.holdout!r}, "
            f"device {self.device})"
        )

    @property
    def num_classes(self) -> int:
        """Number of classes of the suspect data."""
        return self.data.num_classes

    def dataset(self, part: Part = "data") -> ImageDataset:
        """The suspect data or the clean held-out set (a clear error when there is none)."""
        if part == "data":
            return self.data
        if self.holdout is None:
            raise MissingInput("a clean held-out set (`holdout`), none given")
        return self.holdout

    def labels(self, part: Part = "data") -> Tensor:
        """Claimed labels, int64 (N,)."""
        return self.dataset(part).labels

    def require_model(self) -> Network:
        """The model on the evidence's device, or a clear error for defenses that need one.

        It is the caller's own model when that is already on the device, else a private copy
        moved there (made once): the caller's model is never moved. Detectors only read it.
        """
        if self.model is None:
            raise MissingInput("a model trained on the suspect data (`model`)")
        if self._working is None:
            here = all(
                _same_device(t.device, self.device)
                for t in (*self.model.parameters(), *self.model.buffers())
            )
            self._working = self.model if here else copy.deepcopy(self.model).to(self.device)
        return self._working

    def cached(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """Return the value stored under ``key``, computing and storing it on first use."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def put(self, key: Hashable, value: Any) -> None:
        """Store a precomputed representation (used by tests and by callers that have one)."""
        self._cache[key] = value

    def activations(self, layer: str, part: Part = "data", *, pool: bool = True) -> Tensor:
        """Outputs of ``layer`` (conv maps average-pooled when ``pool``), float32 (N, D), CPU.

        The first request for a part runs ONE forward pass that also records the standard
        representations every detector asks for (:meth:`_standard_pass`), so AC, SS,
        DeepFeatures and the DNN baseline share it instead of running a pass each.
        """
        key = ("activations", layer, part, pool)
        if key not in self._cache:
            self._standard_pass(part, extra=(layer, pool))
        return self._cache[key]  # type: ignore[no-any-return]

    def features(self, part: Part = "data") -> Tensor:
        """Penultimate features f(x), (N, feature_dim)."""
        return self.activations(self.require_model().feature_layer, part, pool=False)

    def logits(self, part: Part = "data") -> Tensor:
        """The model's inference logits, float32 (N, K), CPU (from the standard pass)."""
        if ("logits", part) not in self._cache:
            self._standard_pass(part)
        return self._cache[("logits", part)]  # type: ignore[no-any-return]

    def _standard_pass(self, part: Part, extra: tuple[str, bool] | None = None) -> None:
        """One forward pass over ``part`` storing the logits, the penultimate features, every probe
        layer average-pooled, and ``extra`` = (layer, pool), each under its own cache key.

        Recording a layer costs a copy of its (pooled) output, small beside the pass itself; an
        unpooled conv map is only kept when asked for (``extra``). The values equal separate
        passes: the same model, eval mode, images and batches.
        """
        model = self.require_model()
        wanted: dict[tuple[str, bool], None] = {(model.feature_layer, False): None}
        wanted |= {(layer, True): None for layer in model.probe_layers}
        if extra is not None:
            wanted[extra] = None
        wanted = {k: None for k in wanted if ("activations", k[0], part, k[1]) not in self._cache}
        if not wanted and ("logits", part) in self._cache:
            return
        outputs, logits = capture_representations(
            model,
            self.dataset(part).images,
            list(wanted),
            batch_size=self.batch_size,
            device=self.device,
        )
        for (layer, pool), value in outputs.items():
            self._cache[("activations", layer, part, pool)] = value
        self._cache.setdefault(("logits", part), logits.float())

    def lgm_log_likelihood(self, part: Part = "data") -> Tensor:
        """log p(f(x) | k) for every class under an LGM head, float64 (N, K)."""

        def compute() -> Tensor:
            model = self.require_model()
            if not model.is_lgm:
                raise MissingInput("a model trained with the LGM loss (`head=lgm`)")
            head = model.head  # on self.device with the rest of the model
            with torch.no_grad():
                features = self.features(part).to(self.device)
                return head.log_likelihood(features).double().cpu()  # type: ignore[operator]

        return self.cached(("lgm_log_likelihood", part), compute)

    def pixels(self, part: Part = "data") -> Tensor:
        """Raw images flattened to (N, C·H·W), float32."""
        return self.cached(("pixels", part), lambda: self.dataset(part).images.flatten(1))


def _check_fits(data: ImageDataset, model: Network | None, holdout: ImageDataset | None) -> None:
    """Refuse a held-out set or a model for other images than ``data``, or for fewer classes
    (torch failed later, naming neither: "mat1 and mat2 shapes cannot be multiplied")."""
    if holdout is not None and holdout.shape != data.shape:
        raise DataError(
            f"Evidence holdout {holdout.name!r} (images {holdout.shape}) does not match data "
            f"{data.name!r} (images {data.shape})"
        )
    if holdout is not None and holdout.num_classes > data.num_classes:
        raise DataError(
            f"Evidence holdout {holdout.name!r} has {holdout.num_classes} classes, data "
            f"{data.name!r} only {data.num_classes}"
        )
    if model is None:
        return
    config, (c, h, w) = model.config, data.shape
    diffs = [
        f"{key} {getattr(config, key)} (data: {value})"
        for key, value in {"in_channels": c, "height": h, "width": w}.items()
        if getattr(config, key) != value
    ]
    if config.num_classes < data.num_classes:
        diffs.append(f"num_classes {config.num_classes} (data: {data.num_classes})")
    if diffs:
        raise ConfigError(
            f"Evidence model ({config.arch}) does not fit data {data.name!r}: " + ", ".join(diffs)
        )


def _same_device(actual: torch.device, wanted: torch.device) -> bool:
    """Whether a tensor on ``actual`` is on ``wanted`` ("cuda" means the current CUDA device)."""
    if actual.type != wanted.type:
        return False
    if wanted.index is None:
        return actual.type != "cuda" or actual.index == torch.cuda.current_device()
    return actual.index == wanted.index
