"""Image folders: one subfolder per class, mixed formats, sizes and modes, and every error."""

from __future__ import annotations

from pathlib import Path

import pytest

from poisonlab.data import load_dataset
from poisonlab.errors import DataError
from tests.data.conftest import write_image


def make_folder(root: Path) -> Path:
    """Two classes: RGB png/JPG/ppm files of different sizes."""
    write_image(root / "cat" / "a.png", (10, 6), value=10)
    write_image(root / "cat" / "b.JPG", (12, 12), value=20)
    write_image(root / "dog" / "c.ppm", (10, 6), value=30)
    write_image(root / "dog" / "d.jpeg", (5, 5), value=40)
    return root


def test_classes_sizes_and_ids(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "pets")
    (root / "README.txt").write_text("files next to the class folders are ignored")
    (root / "cat" / ".DS_Store").write_bytes(b"\0")
    data = load_dataset(root)
    assert data.class_names == ("cat", "dog") and data.name == "pets"
    assert data.labels.tolist() == [0, 0, 1, 1]
    assert data.shape == (3, 6, 10)  # the first image's size, (height, width)
    assert data.ids.tolist() == ["cat/a.png", "cat/b.JPG", "dog/c.ppm", "dog/d.jpeg"]
    red = round(float(data.images[0, 0, 0, 0]) * 255)
    assert red == 10  # png is lossless


def test_size_option(tmp_path: Path) -> None:
    data = load_dataset(make_folder(tmp_path), size=4)
    assert data.shape == (3, 4, 4)
    assert load_dataset(f"folder:{tmp_path}", size=(3, 5)).shape == (3, 3, 5)


def test_the_resize_warning_says_how_to_choose_the_size(tmp_path: Path, caplog) -> None:
    """It said "give size=(height, width)", which no command takes: `poisonlab data info` and
    `scan` users read a hint they could not follow."""
    load_dataset(make_folder(tmp_path))
    assert "2 of 4 images are not 6×10 (the size of cat/a.png)" in caplog.text
    assert "resize the files, pass --image-size HxW to the command (scan, train" in caplog.text
    assert "or, in Python, load_dataset(path, size=(" in caplog.text


def test_all_grayscale_gives_one_channel_mixed_gives_rgb(tmp_path: Path) -> None:
    write_image(tmp_path / "a" / "1.png", (4, 4), mode="L", value=51)
    write_image(tmp_path / "b" / "2.png", (4, 4), mode="L", value=102)
    gray = load_dataset(tmp_path)
    assert gray.shape == (1, 4, 4)
    assert float(gray.images[1].max()) == pytest.approx(102 / 255)
    write_image(tmp_path / "b" / "3.png", (4, 4), mode="RGB")
    mixed = load_dataset(tmp_path)
    assert mixed.shape == (3, 4, 4)
    assert mixed.images[0, :, 0, 0].tolist() == pytest.approx([51 / 255] * 3)


def test_empty_class_folder(tmp_path: Path) -> None:
    make_folder(tmp_path)
    (tmp_path / "emu").mkdir()
    with pytest.raises(DataError, match=r"emu: empty class folder"):
        load_dataset(tmp_path)


def test_non_image_file_in_class_folder(tmp_path: Path) -> None:
    make_folder(tmp_path)
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"dog/notes.txt: not an image file \(expected .jpeg"):
        load_dataset(tmp_path)


def test_corrupt_image_names_the_file(tmp_path: Path) -> None:
    make_folder(tmp_path)
    (tmp_path / "dog" / "e.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    with pytest.raises(DataError, match=r"dog/e.png: (not a readable image|cannot read)"):
        load_dataset(tmp_path)


def test_truncated_image_names_the_file(tmp_path: Path) -> None:
    make_folder(tmp_path)
    path = write_image(tmp_path / "dog" / "e.png", (64, 64))
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DataError, match=r"dog/e.png: (corrupt|cannot read)"):
        load_dataset(tmp_path)


def test_nested_folder_and_no_class_folders(tmp_path: Path) -> None:
    make_folder(tmp_path / "ok")
    write_image(tmp_path / "ok" / "cat" / "deeper" / "x.png", (4, 4))
    with pytest.raises(DataError, match="nested folder inside class folder 'cat'"):
        load_dataset(tmp_path / "ok")
    flat = tmp_path / "flat"
    write_image(flat / "x.png", (4, 4))
    with pytest.raises(DataError, match="unrecognised data folder"):
        load_dataset(flat)
    with pytest.raises(DataError, match="no class subfolders"):
        load_dataset(f"folder:{flat}")


def test_sixteen_bit_images_are_refused(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "a").mkdir()
    Image.new("I;16", (4, 4), 1000).save(tmp_path / "a" / "deep.png")
    with pytest.raises(DataError, match=r"deep.png: unsupported pixel mode I;16"):
        load_dataset(tmp_path)


def test_no_test_part(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="has no separate test part"):
        load_dataset(make_folder(tmp_path), part="test")


def test_folder_source_on_a_file(tmp_path: Path) -> None:
    """``folder:`` forced on a file: a DataError, not NotADirectoryError."""
    file = write_image(tmp_path / "x.png", (4, 4))
    with pytest.raises(DataError, match=r"x\.png: not a folder"):
        load_dataset(f"folder:{file}")
