"""Image folders: one subfolder per class, mixed formats, sizes and modes, and every error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
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


def test_images_next_to_the_class_folders_are_skipped_with_a_warning(tmp_path, caplog) -> None:
    """An image one folder too high has no class: it was skipped without a word, as a README is."""
    root = make_folder(tmp_path / "pets")
    (root / "README.txt").write_text("not an image: skipped silently")
    load_dataset(root, size=4)
    assert caplog.text == ""
    write_image(root / "stray.PNG", (4, 4))
    write_image(root / "z.jpg", (4, 4))
    assert len(load_dataset(root, size=4)) == 4
    assert "pets: 2 image(s) next to the class folders are not read (stray.PNG, z.jpg)" in (
        caplog.text
    )


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


def test_a_first_image_above_the_size_limit_is_refused_by_name(tmp_path: Path) -> None:
    """Issue: a folder whose first image (sorted) was a 6000×6000 photo loaded every image at that
    size, 144 MB each, before anything could fail; a chosen size has a limit of 1024 a side."""
    from poisonlab.data.folder import folder_image_shape
    from poisonlab.validation import MAX_IMAGE_SIDE

    make_folder(tmp_path)
    write_image(tmp_path / "cat" / "0.png", (MAX_IMAGE_SIDE + 1, 3))
    message = r"cat/0.png: 3×1025 pixels, the size every image of .* would be loaded at"
    for load in (load_dataset, folder_image_shape):
        with pytest.raises(DataError, match=message) as error:
            load(tmp_path)
        assert "above 1024 per side; choose the size: pass --image-size HxW" in str(error.value)
    assert load_dataset(tmp_path, size=8).shape == (3, 8, 8)  # a chosen size loads it
    write_image(tmp_path / "cat" / "0.png", (MAX_IMAGE_SIDE, 3))  # at the limit: loaded
    assert folder_image_shape(tmp_path) == (3, 3, MAX_IMAGE_SIDE)


def test_images_too_large_to_allocate_say_how_large(tmp_path: Path, monkeypatch) -> None:
    """2,000 photos of 3×600×800 need 11.5 GB as float32: numpy's MemoryError was a traceback."""
    real_empty = np.empty

    def small_memory(shape, *args, **kwargs):
        if int(np.prod(shape)) > 1000:
            raise MemoryError("Unable to allocate")
        return real_empty(shape, *args, **kwargs)

    monkeypatch.setattr(np, "empty", small_memory)
    make_folder(tmp_path / "pets")
    assert load_dataset(tmp_path / "pets", size=8).shape == (3, 8, 8)  # 4 × 192 values
    with pytest.raises(DataError, match=r"pets: 4 images of 3×20×20 take 0\.0 GB as float32, more"):
        load_dataset(tmp_path / "pets", size=20)


def test_every_bad_entry_and_unreadable_image_is_named_at_once(tmp_path: Path) -> None:
    """Issue: only the first problem was named, so a folder with a Thumbs.db in each class folder,
    or several corrupt downloads, took one run per file to clean."""
    make_folder(tmp_path)
    (tmp_path / "cat" / "Thumbs.db").write_bytes(b"\0")
    (tmp_path / "dog" / "Thumbs.db").write_bytes(b"\0")
    (tmp_path / "emu").mkdir()
    with pytest.raises(
        DataError, match=r"^3 problems in the class folders: .*cat/Thumbs.db: not an"
    ):
        load_dataset(tmp_path)
    for name in ("cat", "dog"):
        (tmp_path / name / "Thumbs.db").unlink()
    (tmp_path / "emu").rmdir()
    for k in range(7):  # corrupt headers: named from the headers, before any pixel is read
        (tmp_path / "dog" / f"x{k}.png").write_bytes(b"\x89PNG\r\n\x1a\nnot a png")
    with pytest.raises(DataError, match=r"^7 of 11 images cannot be read: .*dog/x0.png: ") as error:
        load_dataset(tmp_path)
    assert "dog/x4.png" in str(error.value) and str(error.value).endswith("; and 2 more")
    for k in range(7):
        (tmp_path / "dog" / f"x{k}.png").unlink()
    for name in ("cat", "dog"):  # truncated: the header reads, the pixels do not
        path = write_image(tmp_path / name / "t.png", (64, 64))
        path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DataError, match=r"^2 of 6 images cannot be read: .*cat/t.png: .*dog/t.png"):
        load_dataset(tmp_path, size=4)


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


def write_gray16(path: Path, values: np.ndarray) -> Path:
    """A 16-bit grayscale PNG (Pillow writes a uint16 array as one) of (height, width) values."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(values, dtype=np.uint16)).save(path)
    return path


# float32(v) / float32(65535) is the nearest float32 to v / 65535 within one rounding: half an ulp
SCALED = {"rtol": 2.0**-24, "atol": 0.0}


def test_sixteen_bit_grayscale_png_loads_scaled_by_65535(tmp_path: Path) -> None:
    """Issue: 16-bit PNGs (scientific and medical folders) were refused as "unsupported pixel
    mode I;16"; converting them through 8 bits would have clipped every value above 255."""
    values = np.array([[0, 1, 255, 256], [1000, 32768, 65534, 65535]])
    write_gray16(tmp_path / "a" / "deep.png", values)
    write_gray16(tmp_path / "b" / "flat.png", np.full((2, 4), 40000))
    data = load_dataset(tmp_path)
    assert data.shape == (1, 2, 4)
    np.testing.assert_allclose(data.images[0, 0].numpy(), values / 65535, **SCALED)
    resized = load_dataset(tmp_path, size=(5, 7))  # bilinear in float: no 8-bit step
    assert resized.shape == (1, 5, 7)
    np.testing.assert_allclose(resized.images[1].numpy(), 40000 / 65535, **SCALED)
    assert float(resized.images.min()) >= 0.0 and float(resized.images.max()) <= 1.0


def test_sixteen_bit_pgm_loads_scaled_to_its_maximum(tmp_path: Path) -> None:
    """A binary PGM (P5) with a maximum value above 255, saved as .ppm: Pillow opens it as mode I
    scaled to 0..65535, so a 12-bit file's 4095 reads as 1."""
    values = np.array([[0, 1, 2048, 4095]], dtype=">u2")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.ppm").write_bytes(b"P5\n4 1\n4095\n" + values.tobytes())
    loaded = load_dataset(tmp_path).images[0, 0, 0].numpy()
    # Pillow's rescale to 0..65535 lands on integers: within one step of 65535
    np.testing.assert_allclose(loaded, values[0].astype(np.float64) / 4095, rtol=0, atol=1 / 65535)
    assert loaded[0] == 0.0 and loaded[-1] == 1.0


def test_mixed_8_and_16_bit_grayscale_share_the_range(tmp_path: Path) -> None:
    """8-bit over 255 and 16-bit over 65535 in one grayscale data set; one colour file makes it
    RGB, the 16-bit values repeated in every channel, 8-bit ones as an all-8-bit folder has them."""
    write_image(tmp_path / "a" / "8.png", (4, 2), mode="L", value=51)
    write_gray16(tmp_path / "b" / "16.png", np.full((2, 4), 1000))
    gray = load_dataset(tmp_path)
    assert gray.shape == (1, 2, 4)
    assert gray.images[0].unique().tolist() == [np.float32(51) / np.float32(255)]
    np.testing.assert_allclose(gray.images[1].numpy(), 1000 / 65535, **SCALED)
    write_image(tmp_path / "c" / "rgb.png", (4, 2), mode="RGB", value=200)
    mixed = load_dataset(tmp_path)
    assert mixed.shape == (3, 2, 4)
    assert mixed.images[0].unique().tolist() == [np.float32(51) / np.float32(255)]
    np.testing.assert_allclose(mixed.images[1].numpy(), 1000 / 65535, **SCALED)
    assert mixed.images[2, :, 0, 0].tolist() == pytest.approx([200 / 255, 55 / 255, 100 / 255])


def test_unsupported_modes_name_the_file_mode_and_what_is_supported(tmp_path: Path) -> None:
    """A float PFM saved as .ppm (mode F), and a 32-bit TIFF named .png (Pillow reads the
    content, not the suffix) whose values do not fit 16 bits."""
    from PIL import Image

    (tmp_path / "a").mkdir()
    pfm = b"Pf\n2 1\n-1.0\n" + np.array([0.5, 2.0], dtype="<f4").tobytes()
    (tmp_path / "a" / "float.ppm").write_bytes(pfm)
    supported = r"\(use 8-bit grayscale or colour, or 16-bit grayscale\)$"
    with pytest.raises(DataError, match=r"float.ppm: unsupported pixel mode F " + supported):
        load_dataset(tmp_path)
    (tmp_path / "a" / "float.ppm").unlink()
    Image.new("I", (2, 2), 70000).save(tmp_path / "a" / "wide.png", format="TIFF")
    with pytest.raises(DataError, match=r"wide.png: pixel mode I holds values 70000..70000, "):
        load_dataset(tmp_path)


def test_no_test_part(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="has no separate test part"):
        load_dataset(make_folder(tmp_path), part="test")


def test_folder_source_on_a_file(tmp_path: Path) -> None:
    """``folder:`` forced on a file: a DataError, not NotADirectoryError."""
    file = write_image(tmp_path / "x.png", (4, 4))
    with pytest.raises(DataError, match=r"x\.png: not a folder"):
        load_dataset(f"folder:{file}")
