"""Evidence: one forward pass per part serves every standard representation, with equal values;
the model it is given is only borrowed (its device and every module's train/eval mode unchanged)."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

from poisonlab.defenses import Evidence, build_detector
from poisonlab.defenses.evidence import MissingInput
from poisonlab.errors import ConfigError, DataError
from poisonlab.models import ModelConfig, build_model
from poisonlab.models.activations import capture_activations, capture_representations
from poisonlab.train import predict_logits
from tests.conftest import blobs_dataset
from tests.defenses.test_contract import (
    VARIANTS,
    assert_same_model,
    build_case,
    fit,
    model_snapshot,
)


def _counted(model):
    """The model with a record of its forward calls: the rows of each (a hook, removed by the
    caller)."""
    calls = []
    handle = model.register_forward_hook(lambda _m, inputs, _out: calls.append(len(inputs[0])))
    return calls, handle


def test_standard_representations_come_from_one_pass_and_equal_separate_passes():
    data = blobs_dataset(n_per_class=30)
    holdout = blobs_dataset(n_per_class=10, seed=1)
    model = build_model(ModelConfig("cnn-small", 1, 8, 8, 3, feature_dim=8), seed=0).eval()
    evidence = Evidence(data, model, holdout=holdout, batch_size=32)
    calls, handle = _counted(model)
    try:
        features = evidence.features()
        probes = [evidence.activations(layer) for layer in model.probe_layers]
        logits = evidence.logits()
        assert len(calls) == 3  # 90 images in batches of 32: one pass
        held = [evidence.activations(layer, "holdout") for layer in model.probe_layers]
        assert len(calls) == 4  # 30 held-out images: one more pass, for that part only
    finally:
        handle.remove()
    separate = capture_activations(model, data.images, list(model.probe_layers), batch_size=32)
    for layer, value in zip(model.probe_layers, probes, strict=True):
        assert torch.equal(value, separate[layer])
    feature_layer = model.feature_layer
    alone = capture_activations(model, data.images, [feature_layer], batch_size=32, pool=False)
    assert torch.equal(features, alone[feature_layer])
    assert torch.equal(logits, predict_logits(model, data.images, batch_size=32))
    held_alone = capture_activations(model, holdout.images, list(model.probe_layers), batch_size=32)
    assert all(torch.equal(a, held_alone[n]) for a, n in zip(held, model.probe_layers, strict=True))


def test_an_unpooled_conv_map_is_only_kept_when_asked_for():
    data = blobs_dataset(n_per_class=5)
    model = build_model(ModelConfig("cnn-small", 1, 8, 8, 3, feature_dim=8), seed=0).eval()
    evidence = Evidence(data, model)
    evidence.features()
    assert not any(
        k[0] == "activations" and k[3] is False and k[1] != "body" for k in evidence._cache
    )
    full = evidence.activations("body.relu1", pool=False)
    assert full.shape == (len(data), 32 * 6 * 6)
    assert torch.equal(
        full, capture_activations(model, data.images, ["body.relu1"], pool=False)["body.relu1"]
    )


def test_one_pass_serves_several_defenses_in_a_scan_like_run():
    data = blobs_dataset(n_per_class=30)
    model = build_model(ModelConfig("cnn-small", 1, 8, 8, 3, feature_dim=8), seed=0).eval()
    evidence = Evidence(data, model, holdout=blobs_dataset(n_per_class=10, seed=1))
    calls, handle = _counted(model)
    try:
        for name in ("activation-clustering", "spectral-signatures", "dnn-uncertainty"):
            build_detector(name).fit(evidence)
        build_detector("deep-features").fit(evidence)
    finally:
        handle.remove()
    # one pass over the data, one over the held-out set: every image through the model once
    # (on the CPU in slices of at most CPU_ROWS images)
    assert sum(calls) == len(data) + len(evidence.holdout)


def test_capture_representations_records_a_layer_both_ways_and_the_outputs():
    model = build_model(ModelConfig("cnn-small", 1, 8, 8, 3), seed=0).eval()
    x = torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    outputs, logits = capture_representations(
        model, x, [("body.relu2", True), ("body.relu2", False)], batch_size=4
    )
    assert outputs[("body.relu2", True)].shape == (10, 64)
    assert outputs[("body.relu2", False)].shape == (10, 64 * 4 * 4)
    maps = outputs[("body.relu2", False)].reshape(10, 64, 4, 4)
    assert torch.allclose(outputs[("body.relu2", True)], maps.mean(dim=(2, 3)))
    with torch.no_grad():
        assert torch.equal(logits, torch.cat([model(x[i : i + 4]) for i in range(0, 10, 4)]))


# ---------------------------------------------------------------------------------------------
# The model is borrowed: never moved, never switched between train and eval mode.


def _mixed_mode(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in train mode except its first layer, frozen in eval mode (fine-tuning set-up)."""
    model.train()
    first = next(m for name, m in model.named_modules() if name and not list(m.children()))
    first.eval()
    return model


@pytest.mark.parametrize(("name", "variant", "params"), VARIANTS)
def test_detectors_leave_a_mixed_mode_model_exactly_as_it_was(name, variant, params):
    case = build_case(name)
    model = _mixed_mode(case.evidence.model)
    before = model_snapshot(model)
    assert len(set(before["training"].values())) == 2  # the probe really is mixed
    fit(name, params, case)
    assert_same_model(before, model_snapshot(model))


def test_capture_restores_each_module_mode():
    model = _mixed_mode(build_model(ModelConfig("cnn-small", 1, 8, 8, 3), seed=0))
    modes = [m.training for m in model.modules()]
    images = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    capture_activations(model, images, list(model.probe_layers))
    assert [m.training for m in model.modules()] == modes


def test_a_model_on_another_device_is_copied_there_not_moved():
    model = build_model(ModelConfig("cnn-small", 1, 8, 8, 3), seed=0)
    evidence = Evidence(blobs_dataset(n_per_class=5), model, device=torch.device("meta"))
    working = evidence.require_model()
    assert working is not model and working is evidence.require_model()  # one copy, made once
    assert {p.device.type for p in working.parameters()} == {"meta"}
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert evidence.model is model


def test_a_model_already_on_the_device_is_used_as_is():
    model = build_model(ModelConfig("cnn-small", 1, 8, 8, 3), seed=0)
    evidence = Evidence(blobs_dataset(n_per_class=5), model, device="cpu")
    assert evidence.require_model() is model


def test_evidence_and_results_print_as_one_line():
    """A notebook shows what an Evidence holds and what a detector found, not every tensor."""
    data = blobs_dataset(n_per_class=40, seed=0)
    model = build_model(ModelConfig("cnn-small", 1, 8, 8, 3, feature_dim=8), seed=0)
    evidence = Evidence(data, model, device="cpu")
    assert repr(evidence) == (
        f"Evidence({data!r}, model cnn-small (softmax), holdout=None, device cpu)"
    )
    for name in ("spectral-signatures", "dnn-uncertainty"):
        result = build_detector(name).fit(evidence).result
        text = repr(result)
        assert text.startswith(f"DetectionResult({name!r}, {int(result.flagged.sum())} flagged ")
        assert f"of {len(data)} analysed" in text and "tensor" not in text and "\n" not in text
        assert ("classes named" in text) == bool(result.verdicts)


def test_evidence_used_directly_names_itself_in_what_it_lacks() -> None:
    """Asked for a representation outside a detector, it said "this defense needs a model ..."
    though no defense was involved; a detector still names itself (tests/defenses/test_contract)."""
    data = blobs_dataset(n_per_class=5)
    softmax = build_model(ModelConfig("cnn-small", 1, 8, 8, 3, feature_dim=8), seed=0)
    for ask, need in (
        (lambda: Evidence(data).features(), "a model trained on the suspect data"),
        (lambda: Evidence(data, softmax).dataset("holdout"), "a clean held-out set"),
        (lambda: Evidence(data, softmax).lgm_log_likelihood(), "a model trained with the LGM"),
    ):
        with pytest.raises(ConfigError, match=rf"^Evidence needs {need}"):
            ask()


def test_a_holdout_or_model_for_other_images_is_refused_when_the_evidence_is_made() -> None:
    """A 12×12 held-out set or data passed, and torch failed once a detector ran, naming
    neither ("mat1 and mat2 shapes cannot be multiplied")."""
    data, bigger = blobs_dataset(n_per_class=5), blobs_dataset(n_per_class=5, size=12)
    model = build_model(ModelConfig("cnn-small", 1, 8, 8, 3, feature_dim=8), seed=0)
    with pytest.raises(DataError, match=r"^Evidence holdout 'blobs' \(images \(1, 12, 12\)\)"):
        Evidence(data, model, holdout=bigger)
    with pytest.raises(ConfigError, match=r"^Evidence model \(cnn-small\) does not fit data "):
        Evidence(bigger, model)
    more = blobs_dataset(n_per_class=2, num_classes=4)
    with pytest.raises(DataError, match="has 4 classes, data 'blobs' only 3"):
        Evidence(data, model, holdout=more)
    with pytest.raises(ConfigError, match=r"num_classes 3 \(data: 4\)"):
        Evidence(more, model)
    fewer = blobs_dataset(n_per_class=2, num_classes=2)  # e.g. an .npz without class_names
    assert Evidence(fewer, model, holdout=fewer).num_classes == 2


def test_what_a_detector_lacks_reads_the_same_once_pickled_or_copied() -> None:
    """Sent back from a worker process (pickled) or copied, "deep-features needs a model" read
    "Evidence needs deep-features needs a model": the message was taken for the need."""
    error = MissingInput("a model trained on the suspect data", owner="deep-features")
    for again in (pickle.loads(pickle.dumps(error)), copy.copy(error)):
        assert type(again) is MissingInput
        assert str(again) == "deep-features needs a model trained on the suspect data"
        assert str(again.by("spectral-signatures")).startswith("spectral-signatures needs a model")
