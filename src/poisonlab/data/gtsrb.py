"""GTSRB (German Traffic Sign Recognition Benchmark) in its published folder layout.

Training: ``Final_Training/Images/<class 00000..00042>/*.ppm``, each class folder with a
``GT-<class>.csv``. Test: ``Final_Test/Images/*.ppm`` with ``GT-final_test.csv`` (the separately
published annotations with ``ClassId``; the ``GT-final_test.test.csv`` shipped next to the test
images has no labels). The csv files are semicolon-separated:
``Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId``. Images are resized to 32×32
(bilinear), optionally after cropping to the sign's region of interest (ROI, corners inclusive).

Reference: Stallkamp et al., "The German Traffic Sign Recognition Benchmark: A multi-class
classification competition", IJCNN 2011.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from poisonlab.data.common import archive_message, check_part, from_unit
from poisonlab.data.dataset import ImageDataset
from poisonlab.data.images import parse_size, probe, read_image
from poisonlab.errors import ConfigError, DataError

NUM_CLASSES = 43
CLASS_NAMES = (
    "Speed limit (20km/h)",
    "Speed limit (30km/h)",
    "Speed limit (50km/h)",
    "Speed limit (60km/h)",
    "Speed limit (70km/h)",
    "Speed limit (80km/h)",
    "End of speed limit (80km/h)",
    "Speed limit (100km/h)",
    "Speed limit (120km/h)",
    "No passing",
    "No passing for vehicles over 3.5 metric tons",
    "Right-of-way at the next intersection",
    "Priority road",
    "Yield",
    "Stop",
    "No vehicles",
    "Vehicles over 3.5 metric tons prohibited",
    "No entry",
    "General caution",
    "Dangerous curve to the left",
    "Dangerous curve to the right",
    "Double curve",
    "Bumpy road",
    "Slippery road",
    "Road narrows on the right",
    "Road work",
    "Traffic signals",
    "Pedestrians",
    "Children crossing",
    "Bicycles crossing",
    "Beware of ice/snow",
    "Wild animals crossing",
    "End of all speed and passing limits",
    "Turn right ahead",
    "Turn left ahead",
    "Ahead only",
    "Go straight or right",
    "Go straight or left",
    "Keep right",
    "Keep left",
    "Roundabout mandatory",
    "End of no passing",
    "End of no passing by vehicles over 3.5 metric tons",
)
TRAIN_DIR = Path("Final_Training", "Images")
TEST_DIR = Path("Final_Test", "Images")
_FIELDS = ("Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2")
_Row = tuple[Path, int, int, tuple[int, int, int, int], int]


def gtsrb_root(path: Path) -> Path | None:
    """The folder holding ``Final_Training``/``Final_Test`` at ``path`` or ``path/GTSRB``."""
    for folder in (path, path / "GTSRB"):
        if (folder / TRAIN_DIR).is_dir() or (folder / TEST_DIR).is_dir():
            return folder
    return None


def enclosing_root(path: Path) -> Path | None:
    """The GTSRB root above ``path`` when ``path`` is one of its inner folders (``Final_Training``,
    ``Final_Test`` or their ``Images``), else None: users often point at the folder of class
    folders, which must not be read as a plain image folder (its csv files are not images)."""
    parts = path.resolve().parts
    for inner in (TRAIN_DIR, TEST_DIR, TRAIN_DIR.parent, TEST_DIR.parent):
        if len(parts) > len(inner.parts) and parts[-len(inner.parts) :] == inner.parts:
            root = Path(*parts[: -len(inner.parts)])
            if gtsrb_root(root) == root:
                return root
    return None


def has_test_annotations(root: Path) -> bool:
    """True when the labelled test annotations (``GT-final_test.csv``) are present."""
    return _test_csv(root) is not None


def _test_csv(root: Path) -> Path | None:
    """Where ``GT-final_test.csv`` was put: next to the test images, in Final_Test or the root."""
    for folder in (root / TEST_DIR, root / TEST_DIR.parent, root):
        if (folder / "GT-final_test.csv").is_file():
            return folder / "GT-final_test.csv"
    return None


def read_annotations(csv_path: Path, image_dir: Path, *, labelled: bool = True) -> list[_Row]:
    """(file, width, height, roi, class) per row of a GTSRB csv, each field checked."""
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, delimiter=";")
            header = [h.strip() for h in reader.fieldnames or ()]
            wanted = (*_FIELDS, "ClassId") if labelled else _FIELDS
            missing = [f for f in wanted if f not in header]
            if missing:
                raise DataError(
                    f"{csv_path}: missing column(s) {', '.join(missing)}: expected the "
                    f"semicolon-separated header {';'.join(wanted)}, found {';'.join(header)!r}"
                )
            reader.fieldnames = header
            rows = []
            for line, record in enumerate(reader, start=2):
                numbers = _integers(record, wanted[1:], f"{csv_path}:{line}")
                width, height, x1, y1, x2, y2 = numbers[:6]
                label = numbers[6] if labelled else -1
                file = image_dir / record["Filename"].strip()
                if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
                    raise DataError(
                        f"{csv_path}:{line}: ROI x {x1}..{x2}, y {y1}..{y2} does not fit the "
                        f"{width}×{height} image (expected 0 <= Roi.X1 < Roi.X2 <= {width} and "
                        f"0 <= Roi.Y1 < Roi.Y2 <= {height})"
                    )
                box = (x1, y1, min(x2 + 1, width), min(y2 + 1, height))
                rows.append((file, width, height, box, label))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{csv_path}: cannot read annotations ({exc})") from None
    return rows


def _integers(record: dict[str, str | None], fields: tuple[str, ...], where: str) -> list[int]:
    """The integer value of each of ``fields`` in one csv row; a DataError names the field."""
    values = []
    for field in fields:
        text = record.get(field)
        if text is None:  # csv.DictReader's value for the fields a short row lacks
            raise DataError(f"{where}: {field} must be an integer, got nothing (the row is short)")
        try:
            values.append(int(text))
        except ValueError:
            raise DataError(f"{where}: {field} must be an integer, got {text!r}") from None
    return values


def _train_rows(root: Path) -> list[_Row]:
    """All training rows, class folder by class folder, with ClassId checked against the folder."""
    images = root / TRAIN_DIR
    if not images.is_dir():
        raise DataError(f"{root}: {TRAIN_DIR.as_posix()} is missing")
    rows: list[_Row] = []
    for folder in sorted(p for p in images.iterdir() if p.is_dir()):
        if not (folder.name.isdigit() and int(folder.name) < NUM_CLASSES):
            raise DataError(f"{folder}: not a GTSRB class folder (00000 .. 000{NUM_CLASSES - 1})")
        csv_path = folder / f"GT-{folder.name}.csv"
        if not csv_path.is_file():
            raise DataError(f"{folder}: annotation file {csv_path.name} is missing")
        for row in read_annotations(csv_path, folder):
            if row[4] != int(folder.name):
                raise DataError(
                    f"{csv_path}: {row[0].name} has ClassId {row[4]}, not {folder.name}"
                )
            rows.append(row)
    if not rows:
        raise DataError(f"{images}: no class folders with images")
    return rows


def _test_rows(root: Path) -> list[_Row]:
    """All labelled test rows; without ``GT-final_test.csv`` a DataError says where to put it."""
    csv_path = _test_csv(root)
    if csv_path is None:
        unlabelled = root / TEST_DIR / "GT-final_test.test.csv"
        hint = f"{unlabelled.name} has no labels; " if unlabelled.is_file() else ""
        raise DataError(
            f"{root / TEST_DIR}: {hint}the test part needs labels: put GT-final_test.csv "
            "(from GTSRB_Final_Test_GT.zip) next to the test images"
        )
    rows = read_annotations(csv_path, root / TEST_DIR)
    bad = [r for r in rows if not 0 <= r[4] < NUM_CLASSES]
    if bad:
        raise DataError(f"{csv_path}: ClassId {bad[0][4]} outside 0..{NUM_CLASSES - 1}")
    return rows


def load_gtsrb(
    path: Path,
    part: str = "train",
    *,
    size: int | tuple[int, int] = 32,
    roi: bool = False,
) -> ImageDataset:
    """Load ``part`` of GTSRB at ``path``: RGB images resized to ``size`` (after the ROI crop if asked)."""
    root = gtsrb_root(path)
    if root is None and (outer := enclosing_root(path)) is not None:
        raise DataError(
            f"{path} is inside the GTSRB folder {outer}: pass {outer} itself (the training part "
            f"is read from {TRAIN_DIR.as_posix()}, the labelled test part with part='test', --part test)"
        )
    if root is None and (archive := archive_message(path)) is not None:
        raise DataError(archive)
    if root is None:
        raise DataError(
            f"{path}: not a GTSRB folder (no {TRAIN_DIR.as_posix()} or {TEST_DIR.as_posix()})"
        )
    check_part(part, str(root), has_test=True)
    if not isinstance(roi, bool):
        raise ConfigError(f"roi must be True or False, got {roi!r}")
    shape = parse_size(size) or (32, 32)
    rows = _train_rows(root) if part == "train" else _test_rows(root)
    pixels = np.empty((len(rows), 3, *shape), dtype=np.float32)
    for k, (file, width, height, box, _) in enumerate(rows):
        if not file.is_file():
            raise DataError(f"{file}: listed in the annotations but missing")
        pixels[k] = _read_checked(file, width, height, box if roi else None, shape)
    return from_unit(
        pixels,
        np.array([r[4] for r in rows], dtype=np.int64),
        num_classes=NUM_CLASSES,
        class_names=CLASS_NAMES,
        name="gtsrb",
        ids=[r[0].relative_to(root).as_posix() for r in rows],
    )


def _read_checked(
    file: Path,
    width: int,
    height: int,
    box: tuple[int, int, int, int] | None,
    shape: tuple[int, int],
) -> np.ndarray:
    """One image as (3, H, W) float32 in [0, 1], after checking its size against the annotation."""
    _, (actual_h, actual_w) = probe(file)
    if (actual_w, actual_h) != (width, height):
        raise DataError(f"{file}: image is {actual_w}×{actual_h}, annotation says {width}×{height}")
    return read_image(file, channels=3, size=shape, box=box)
