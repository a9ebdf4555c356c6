"""GTSRB in its published layout, built from tiny ppm files and semicolon csv annotations."""

from __future__ import annotations

from pathlib import Path

import pytest

from poisonlab.data import has_test_part, load_dataset
from poisonlab.data.gtsrb import CLASS_NAMES, NUM_CLASSES, load_gtsrb
from poisonlab.errors import ConfigError, DataError
from tests.data.conftest import GT_HEADER, gtsrb_root, write_image


def test_train_part(tmp_path: Path) -> None:
    root = gtsrb_root(tmp_path / "GTSRB")
    data = load_dataset(tmp_path)  # the parent of GTSRB/ is accepted too
    assert len(data) == 4 and data.shape == (3, 32, 32)
    assert data.num_classes == NUM_CLASSES == len(CLASS_NAMES) == 43
    assert data.labels.tolist() == [0, 0, 2, 2]
    assert data.ids[2] == "Final_Training/Images/00002/00000_00000.ppm"
    assert data.class_counts()[:3] == [2, 0, 2]
    assert has_test_part(root)


def test_test_part_and_options(tmp_path: Path) -> None:
    root = gtsrb_root(tmp_path)
    test = load_dataset(root, part="test", size=(16, 24))
    assert test.shape == (3, 16, 24) and test.labels.tolist() == [0, 2]
    assert test.ids[1] == "Final_Test/Images/00001.ppm"


def test_roi_crop_changes_the_pixels(tmp_path: Path) -> None:
    from PIL import Image

    root = gtsrb_root(tmp_path, classes=(1,), per_class=1)
    image_path = root / "Final_Training/Images/00001/00000_00000.ppm"
    image = Image.new("RGB", (40, 36), (255, 0, 0))
    image.paste((0, 0, 255), (5, 5, 35, 31))  # the ROI 5..34 × 5..30 (inclusive) is blue
    image.save(image_path)
    cropped = load_gtsrb(root, roi=True).images[0]
    whole = load_gtsrb(root).images[0]
    assert float(cropped[0].max()) == 0.0 and float(cropped[2].min()) == 1.0
    assert float(whole[0].max()) == 1.0  # the red border is still there


def test_unlabelled_test_csv_explains_labels_are_needed(tmp_path: Path) -> None:
    root = gtsrb_root(tmp_path)
    images = root / "Final_Test/Images"
    (images / "GT-final_test.csv").rename(images / "GT-final_test.test.csv")
    assert not has_test_part(root)
    with pytest.raises(DataError, match=r"GT-final_test.test.csv has no labels; .*needs labels"):
        load_dataset(root, part="test")


def test_class_id_must_match_folder(tmp_path: Path) -> None:
    root = gtsrb_root(tmp_path)
    csv_path = root / "Final_Training/Images/00002/GT-00002.csv"
    csv_path.write_text(csv_path.read_text().replace(";2\n", ";3\n"))
    with pytest.raises(DataError, match=r"GT-00002.csv: 00000_00000.ppm has ClassId 3, not 00002"):
        load_dataset(root)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            "00000_00000.ppm;40;36;5;5;99;30;0\n",
            r"csv:2: ROI x 5\.\.99, y 5\.\.30 does not fit the 40×36 image \(expected "
            r"0 <= Roi\.X1 < Roi\.X2 <= 40 and 0 <= Roi\.Y1 < Roi\.Y2 <= 36\)$",
        ),
        (
            "00000_00000.ppm;40;36;5;5;x;30;0\n",
            r"GT-00000.csv:2: Roi.X2 must be an integer, got 'x'$",
        ),
        (
            "00000_00000.ppm;40;36;5;5;30;30\n",
            r"csv:2: ClassId must be an integer, got nothing \(the row",
        ),
        ("missing.ppm;40;36;5;5;30;30;0\n", "missing.ppm: listed in the annotations but missing"),
        ("00000_00000.ppm;41;36;5;5;30;30;0\n", "image is 40×36, annotation says 41×36"),
    ],
)
def test_bad_annotation_rows(tmp_path: Path, row: str, message: str) -> None:
    root = gtsrb_root(tmp_path, classes=(0,), per_class=1)
    (root / "Final_Training/Images/00000/GT-00000.csv").write_text(GT_HEADER + row)
    with pytest.raises(DataError, match=message):
        load_dataset(root)


def test_missing_column_and_missing_csv(tmp_path: Path) -> None:
    root = gtsrb_root(tmp_path, classes=(0,), per_class=1)
    csv_path = root / "Final_Training/Images/00000/GT-00000.csv"
    csv_path.write_text("Filename;Width;Height\n00000_00000.ppm;40;36\n")
    with pytest.raises(DataError, match=r"GT-00000.csv: missing column\(s\) Roi.X1"):
        load_dataset(root)
    csv_path.write_text(GT_HEADER.replace(";", ",") + "00000_00000.ppm,40,36,5,5,30,30,0\n")
    expected = "expected the semicolon-separated header Filename;Width;Height;Roi.X1;Roi.Y1;"
    with pytest.raises(DataError, match=rf"{expected}.*found 'Filename,Width,Height,Roi.X1,"):
        load_dataset(root)
    csv_path.unlink()
    with pytest.raises(DataError, match=r"annotation file GT-00000.csv is missing"):
        load_dataset(root)


def test_corrupt_ppm_names_the_file(tmp_path: Path) -> None:
    root = gtsrb_root(tmp_path, classes=(0,), per_class=1)
    (root / "Final_Training/Images/00000/00000_00000.ppm").write_bytes(b"P6\n40 36\n255\n\x00")
    with pytest.raises(DataError, match=r"00000_00000.ppm: (corrupt|cannot read)"):
        load_dataset(root)


def test_unexpected_class_folder(tmp_path: Path) -> None:
    root = gtsrb_root(tmp_path, classes=(0,), per_class=1)
    write_image(root / "Final_Training/Images/00050/a.ppm", (8, 8))
    with pytest.raises(DataError, match="00050: not a GTSRB class folder"):
        load_dataset(f"gtsrb:{root}")


def test_roi_must_be_a_bool(tmp_path: Path) -> None:
    """roi="no" is truthy: refused instead of silently cropping."""
    gtsrb_root(tmp_path / "GTSRB")
    with pytest.raises(ConfigError, match="roi must be True or False, got 'no'"):
        load_dataset(tmp_path, roi="no")


@pytest.mark.parametrize(
    "inner", ["Final_Training/Images", "Final_Training", "Final_Test/Images", "Final_Test"]
)
def test_inner_folder_names_the_root_to_pass(tmp_path: Path, inner: str) -> None:
    """Pointing at Final_Training/Images (the folder of class folders) once read it as a plain
    image folder and failed on GT-00000.csv, "not an image file"."""
    root = gtsrb_root(tmp_path / "GTSRB")
    with pytest.raises(DataError, match=r"inside the GTSRB folder .*GTSRB: pass .*GTSRB itself"):
        load_dataset(root / inner)
    with pytest.raises(DataError, match="inside the GTSRB folder"):
        load_dataset(f"gtsrb:{root / inner}")
