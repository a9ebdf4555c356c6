"""The .npz format: save_npz round trips, plain arrays, and every validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from poisonlab.data import ImageDataset, load_dataset, save_npz
from poisonlab.errors import DataError


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def dataset(images: torch.Tensor) -> ImageDataset:
    return ImageDataset(
        images,
        torch.tensor([0, 2, 1, 2]),
        3,
        ("ant", "bee", "cow"),
        "zoo",
        np.array(["a.png", "b.png", "c.png", "d.png"]),
    )


@pytest.mark.parametrize(
    "images",
    [
        torch.randint(0, 256, (4, 3, 5, 6), generator=_seeded(0)).float() / 255,  # stored as uint8
        torch.rand(4, 1, 5, 6, generator=_seeded(1)),  # not multiples of 1/255: stored as float32
    ],
)
def test_save_npz_round_trip_is_identical(tmp_path: Path, images: torch.Tensor) -> None:
    original = dataset(images)
    path = save_npz(original, tmp_path / "zoo.npz", poison_mask=np.zeros(4, bool))
    loaded = load_dataset(path)
    assert torch.equal(loaded.images, original.images)
    assert torch.equal(loaded.labels, original.labels)
    assert loaded.ids.tolist() == original.ids.tolist()
    assert loaded.class_names == original.class_names and loaded.num_classes == 3


def test_plain_arrays_without_ids_or_names(tmp_path: Path) -> None:
    path = tmp_path / "plain.npz"
    np.savez(path, x=np.full((3, 4, 4), 255, np.uint8), y=np.array([0, 4, 1]))
    data = load_dataset(path)
    assert data.shape == (1, 4, 4) and float(data.images.min()) == 1.0
    assert data.num_classes == 5 and data.class_names == ("0", "1", "2", "3", "4")
    assert data.ids.tolist() == ["plain.npz#0", "plain.npz#1", "plain.npz#2"]
    renamed = tmp_path / "no-suffix"
    renamed.write_bytes(path.read_bytes())  # detected by content, not suffix
    assert len(load_dataset(renamed)) == 3


def _write(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


X = np.zeros((2, 4, 4), np.uint8)
Y = np.array([0, 1])


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": X}, "missing array 'y'"),
        ({"y": Y, "z": X}, "missing array 'x'"),
        ({}, r"missing array 'x' \(found: no arrays at all\)"),  # it read "(found: )"
        ({"x": np.zeros((2, 16), np.uint8), "y": Y}, r"'x' must have shape \(N, H, W\)"),
        ({"x": np.zeros((2, 3, 8, 8), np.uint8), "y": Y}, "8 channels in its last axis"),
        (
            {"x": np.zeros((2, 1, 8, 8), np.uint8), "y": Y},
            r"looks channels-first \(N×C×H×W\): save x.transpose\(0, 2, 3, 1\)",
        ),
        ({"x": X, "y": np.array([0, 1, 1])}, "2 images in 'x' but 3 labels"),
        ({"x": X, "y": np.array([0, -1])}, "negative labels"),
        ({"x": X, "y": np.array([0.0, 1.0])}, "'y' must be a 1-d integer array"),
        ({"x": np.full((2, 4, 4), np.nan, np.float32), "y": Y}, "NaN or infinite pixels"),
        ({"x": np.full((2, 4, 4), 1.5), "y": Y}, r"must lie in \[0, 1\], found 1.5..1.5"),
        # rounding overshoot: shown in full (it once read "found 0..1"), with the fix
        (
            {"x": np.array([0.0, 1 + 1e-12] * 16).reshape(2, 4, 4), "y": Y},
            r"found 0.0..1.000000000001 \(16 of 32 values outside\).*np.clip",
        ),
        ({"x": np.full((2, 4, 4), 3, np.int64), "y": Y}, "must be uint8 or float"),
        ({"x": X, "y": np.array([0, 2]), "class_names": np.array(["a", "b"])}, "label 2 but"),
        ({"x": X, "y": Y, "ids": np.array(["only-one"])}, "1 ids for 2 samples"),
        ({"x": X, "y": Y, "class_names": np.array([1, 2])}, "'class_names' must be a 1-d array"),
        # a malformed ground-truth mask once passed loading, then failed after the whole scan
        # (wrong length) or was read as all poisons (strings cast to bool)
        ({"x": X, "y": Y, "is_poison": np.zeros(1, bool)}, r"'is_poison' .* must be 2 booleans"),
        ({"x": X, "y": Y, "is_poison": np.array(["no", "no"])}, r"got <U2\(2,\)"),
        ({"x": X, "y": Y, "is_poison": np.array([0, 2])}, r"'is_poison'.*got int64\(2,\)"),
        # ... naming the value that is not 0/1 (the dtype and shape alone looked right)
        ({"x": X, "y": Y, "is_poison": np.array([0, 2])}, r"holding 2 \(1 of 2 values"),
        # images without pixels once raised torch's RuntimeError from aminmax, a traceback
        (
            {"x": np.zeros((2, 0, 4), np.uint8), "y": Y},
            r"images of 0×4 pixels \(shape \(2, 0, 4\)\)",
        ),
        ({"x": np.zeros((2, 4, 0, 1), np.float32), "y": Y}, "images of 4×0 pixels"),
    ],
)
def test_bad_arrays(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    path = _write(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message):
        load_dataset(path)


def test_is_poison_as_written_by_attacks_loads(tmp_path: Path) -> None:
    for mask in (np.array([True, False]), np.array([1, 0], np.uint8)):
        assert len(load_dataset(_write(tmp_path / "ok.npz", x=X, y=Y, is_poison=mask))) == 2


def test_object_arrays_are_never_unpickled(tmp_path: Path) -> None:
    path = _write(tmp_path / "obj.npz", x=X, y=Y, ids=np.array(["a", None], dtype=object))
    with pytest.raises(DataError, match="'ids' cannot be read without pickle"):
        load_dataset(path)


def test_corrupt_archive_and_no_test_part(tmp_path: Path) -> None:
    path = _write(tmp_path / "data.npz", x=X, y=Y)
    with pytest.raises(DataError, match="has no separate test part"):
        load_dataset(path, part="test")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match=r"data.npz"):
        load_dataset(f"npz:{path}")


def _arrays(n: int = 4) -> dict[str, np.ndarray]:
    return {"x": np.zeros((n, 5, 6), np.uint8), "y": np.arange(n) % 2}


def test_truncated_or_mislabelled_npz_says_what_is_wrong(tmp_path: Path) -> None:
    """A file named .npz is read as one, so its error says truncated / not a zip (it once said
    "unrecognised data file" as if the format were unknown)."""
    whole = tmp_path / "whole.npz"
    np.savez(whole, **_arrays())
    truncated = tmp_path / "cut.npz"
    truncated.write_bytes(whole.read_bytes()[:100])
    with pytest.raises(DataError, match=r"cut\.npz: corrupt or truncated \.npz \(zip\) archive"):
        load_dataset(truncated)
    text = tmp_path / "notes.npz"
    text.write_text("x,y\n1,2\n")
    with pytest.raises(DataError, match=r"notes\.npz: not an \.npz archive.*starts with b'x,y"):
        load_dataset(text)
    single = tmp_path / "x.npy"
    np.save(single, _arrays()["x"])
    with pytest.raises(DataError, match=r"x\.npy: a single \.npy array.*numpy\.savez"):
        load_dataset(single)
    with pytest.raises(DataError, match=r"a folder, not an \.npz file"):
        load_dataset(f"npz:{tmp_path}")


def test_corrupt_member_is_not_blamed_on_pickle(tmp_path: Path) -> None:
    """An .npy member whose header promises more data than it holds is corrupt, not a pickle."""
    import io
    import zipfile

    arrays = _arrays()
    member = io.BytesIO()
    np.lib.format.write_array(member, arrays["x"])
    short = member.getvalue()[:-7]
    path = tmp_path / "short.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", short)
        labels = io.BytesIO()
        np.lib.format.write_array(labels, arrays["y"])
        archive.writestr("y.npy", labels.getvalue())
    with pytest.raises(DataError, match=r"short\.npz: array 'x' is corrupt") as error:
        load_dataset(path)
    assert "pickle" not in str(error.value)


def test_save_npz_to_a_folder_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    """It raised IsADirectoryError from a rename and left FOLDER.partial.npz beside the folder."""
    folder = tmp_path / "out"
    folder.mkdir()
    data = dataset(torch.zeros(4, 1, 3, 3))
    with pytest.raises(DataError, match=rf"^{folder}: a folder; name the .npz file to write in it"):
        save_npz(data, folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and not any(folder.iterdir())


def test_a_failed_write_leaves_no_partial_file(tmp_path: Path, monkeypatch) -> None:
    def half_written(path: Path, **arrays: np.ndarray) -> None:
        Path(path).write_bytes(b"PK\x03\x04")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", half_written)
    with pytest.raises(OSError, match="No space left"):
        save_npz(dataset(torch.zeros(4, 1, 3, 3)), tmp_path / "data.npz")
    assert list(tmp_path.iterdir()) == []
