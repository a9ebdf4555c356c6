"""Training in a child process gives the network this process would have trained."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from poisonlab.errors import PoisonlabError
from poisonlab.models import ModelConfig, build_model
from poisonlab.train import TrainConfig, train_model
from poisonlab.train.background import BackgroundTraining, worth_it
from tests.conftest import blobs_dataset


def _as_loaded_from_nhwc(data):
    """The data with the strides of images read from an (N, H, W, C) array: for one channel
    torch also sees them as channels-last, and its convolutions round differently then."""
    h, w = data.images.shape[2:]
    images = torch.empty_strided(data.images.shape, (h * w, 1, w, 1)).copy_(data.images)
    assert images.stride() != data.images.stride() and torch.equal(images, data.images)
    return replace(data, images=images)


@pytest.mark.parametrize("layout", ["contiguous", "nhwc"])
def test_child_trains_the_same_weights_as_this_process(layout):
    data = blobs_dataset(n_per_class=20)
    if layout == "nhwc":
        data = _as_loaded_from_nhwc(data)
    config = ModelConfig("lgm-net", 1, 8, 8, 3, head="lgm")
    recipe = TrainConfig(epochs=2, batch_size=16, head_lr=1e-2, seed=3)
    with BackgroundTraining(config, data, recipe, seed=3, threads=1) as job:
        child, history = job.result()
    here = build_model(config, seed=3)
    with torch.random.fork_rng():
        expected = train_model(here, data, recipe)
    untimed = [{**r.__dict__, "seconds": 0} for r in history.history]
    assert untimed == [{**r.__dict__, "seconds": 0} for r in expected.history]
    assert (history.best_epoch, history.stopped_early) == (expected.best_epoch, False)
    state = here.state_dict()
    assert child.state_dict().keys() == state.keys()
    for key, value in child.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert not child.training


def test_a_failing_child_is_a_clear_error_and_leaves_nothing_behind():
    data = blobs_dataset(n_per_class=5)
    config = ModelConfig("cnn-small", 1, 8, 8, 3)
    bad = TrainConfig(epochs=1, seed=0)
    job = BackgroundTraining(config, data, bad, seed=0, threads=1)
    (job._folder / "job.json").write_text("{}")  # the child cannot read its job
    with pytest.raises(PoisonlabError, match=r"cnn-small .* failed"):
        job.result()
    assert not job._folder.exists()


def test_cancel_stops_the_child_and_removes_its_folder():
    data = blobs_dataset(n_per_class=5)
    job = BackgroundTraining(
        ModelConfig("cnn-small", 1, 8, 8, 3), data, TrainConfig(epochs=1), seed=0, threads=1
    )
    job.cancel()
    assert not job._folder.exists()
    with pytest.raises(PoisonlabError, match="already collected"):
        job.result()


def test_worth_it_needs_a_free_core_and_enough_work(monkeypatch):
    monkeypatch.setattr("poisonlab.runtime.cpu_count", lambda: 2)
    assert worth_it(2000, 40, threads=1)
    assert not worth_it(2000, 40, threads=2)  # no core left for the child
    assert not worth_it(100, 3, threads=1)  # start-up would cost more than it saves
