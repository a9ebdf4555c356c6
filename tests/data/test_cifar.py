"""CIFAR-10 python batches through the restricted unpickler, including hostile pickles."""

from __future__ import annotations

import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest

from poisonlab.data import has_test_part, load_dataset
from poisonlab.data.cifar import read_batch
from poisonlab.data.safe_pickle import safe_loads
from poisonlab.errors import DataError
from tests.data.conftest import cifar_batch, cifar_folder, write_pickle


def test_train_and_test_parts(tmp_path: Path) -> None:
    folder = cifar_folder(tmp_path, n=3)
    train = load_dataset(folder)
    assert len(train) == 15 and train.shape == (3, 32, 32) and train.name == "cifar10"
    assert train.ids[5] == "cifar-10-batches-py/data_batch_2#2"
    assert train.class_names[:3] == ("airplane", "automobile", "bird")
    test = load_dataset(folder, part="test")
    assert len(test) == 3 and test.ids[0] == "cifar-10-batches-py/test_batch#0"
    assert has_test_part(folder) and has_test_part(tmp_path)  # the parent is accepted too


def test_pixel_layout_is_rgb_planes(tmp_path: Path) -> None:
    folder = cifar_folder(tmp_path, n=2, batches=1)
    raw = cifar_batch(2, seed=1)[b"data"]
    image = load_dataset(folder).images[1].numpy()
    np.testing.assert_array_equal(np.round(image * 255).astype(np.uint8).reshape(-1), raw[1])
    assert image[1, 0, 0] * 255 == pytest.approx(raw[1][1024])  # green plane starts at 1024


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_every_pickle_protocol_loads(tmp_path: Path, protocol: int) -> None:
    batch = cifar_batch(3)
    path = write_pickle(tmp_path / "data_batch_1", batch, protocol=protocol)
    pixels, labels = read_batch(path)
    np.testing.assert_array_equal(pixels.reshape(3, -1), batch[b"data"])
    assert labels.tolist() == [0, 1, 2]


def test_wrong_keys_name_the_file_and_key(tmp_path: Path) -> None:
    folder = cifar_folder(tmp_path, n=2)
    batch = cifar_batch(2)
    batch[b"fine_labels"] = batch.pop(b"labels")  # CIFAR-100 style keys
    write_pickle(folder / "data_batch_3", batch)
    with pytest.raises(DataError, match=r"data_batch_3: missing key b'labels' \(found keys: "):
        load_dataset(folder)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (b"data", np.zeros((2, 3071), np.uint8), r"shape \(N, 3072\)"),
        (b"data", np.zeros((2, 3072), np.float32), "must be a uint8 array"),
        (b"labels", [0, 10], r"labels must lie in 0..9, found 0..10"),
        (b"labels", [-1, 3], r"labels must lie in 0..9, found -1..3"),
        (b"labels", [0], "2 images but 1 labels"),
        (b"labels", ["a", "b"], "must be a list of integers"),
    ],
)
def test_bad_batch_contents(tmp_path: Path, field: bytes, value: object, message: str) -> None:
    batch = cifar_batch(2)
    batch[field] = value
    path = write_pickle(tmp_path / "data_batch_1", batch)
    with pytest.raises(DataError, match=message):
        read_batch(path)


def test_gap_in_batches_and_missing_test(tmp_path: Path) -> None:
    folder = cifar_folder(tmp_path, n=2)
    (folder / "data_batch_4").unlink()
    with pytest.raises(DataError, match="data_batch_4 is missing"):
        load_dataset(folder)
    (folder / "test_batch").unlink()
    assert not has_test_part(folder)


def test_truncated_pickle(tmp_path: Path) -> None:
    path = write_pickle(tmp_path / "data_batch_1", cifar_batch(2))
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DataError, match="data_batch_1: corrupt or truncated pickle"):
        read_batch(path)


class _Touch:
    """A pickle payload that creates a marker file when unpickled by plain pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, (f"touch {self.marker}",))


class _Popen(_Touch):
    def __reduce__(self) -> tuple[object, ...]:
        return (subprocess.Popen, (["touch", str(self.marker)],))


class _Eval(_Touch):
    def __reduce__(self) -> tuple[object, ...]:
        return (eval, (f"open({str(self.marker)!r}, 'w')",))


@pytest.mark.parametrize("payload", [_Touch, _Popen, _Eval])
@pytest.mark.parametrize("protocol", [2, 5])
def test_code_execution_payload_is_refused_and_never_runs(
    tmp_path: Path, payload: type[_Touch], protocol: int
) -> None:
    marker = tmp_path / "pwned"
    folder = cifar_folder(tmp_path, n=2)
    batch = cifar_batch(2)
    batch[b"labels"] = payload(marker)
    write_pickle(folder / "data_batch_1", batch, protocol=protocol)
    with pytest.raises(DataError, match=r"data_batch_1: not a safe data pickle: refused"):
        load_dataset(folder)
    assert not marker.exists()


def test_refusal_names_the_global(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(pickle.UnpicklingError, match=r"refused to load global (posix|os)\.system"):
        safe_loads(pickle.dumps(_Touch(marker)))
    assert not marker.exists()


@pytest.mark.parametrize("name", ["data_batch_1", "test_batch", "batches.meta"])
def test_one_batch_file_names_the_folder_to_pass(tmp_path: Path, name: str) -> None:
    """A batch file given directly was "unrecognised data file" (and, forced with cifar10:,
    "no data_batch_1" although it was data_batch_1)."""
    folder = cifar_folder(tmp_path, n=2, batches=1)
    for spec in (folder / name, f"cifar10:{folder / name}"):
        with pytest.raises(DataError, match=rf"{name} is one file of the CIFAR-10 folder"):
            load_dataset(spec)
