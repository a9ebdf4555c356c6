"""load_dataset: names, NAME:PATH prefixes, detection by content, options, and built-ins."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from poisonlab.data import DATA_SOURCES, detect_source, has_test_part, image_shape, load_dataset
from poisonlab.data.builtin import FASHION_MNIST_DIR
from poisonlab.errors import ConfigError, DataError
from tests.data.conftest import cifar_folder, gtsrb_root, mnist_folder, write_image


@pytest.fixture(scope="module")
def digits():  # type: ignore[no-untyped-def]
    return load_dataset("digits")


def test_digits(digits) -> None:  # type: ignore[no-untyped-def]
    assert len(digits) == 1797 and digits.shape == (1, 8, 8) and digits.num_classes == 10
    assert float(digits.images.max()) == 1.0 and float(digits.images.min()) == 0.0
    assert digits.ids[41] == "digits.csv.gz#41"
    assert digits.class_names == tuple("0123456789")
    assert not has_test_part("digits")
    with pytest.raises(DataError, match="digits has no separate test part"):
        load_dataset("digits", part="test")


def test_detection_by_content(tmp_path: Path) -> None:
    expected = {
        mnist_folder(tmp_path / "m"): "mnist",
        cifar_folder(tmp_path / "c", n=1, batches=1): "cifar10",
        gtsrb_root(tmp_path / "g", classes=(0,), per_class=1): "gtsrb",
        write_image(tmp_path / "f" / "a" / "x.png", (4, 4)).parent.parent: "folder",
    }
    for path, name in expected.items():
        assert detect_source(path).name == name
    with pytest.raises(DataError, match="unrecognised data file"):
        detect_source(Path(__file__))


def test_registered_names() -> None:
    assert set(DATA_SOURCES) == {
        "digits",
        "fashion-mnist",
        "mnist",
        "cifar10",
        "gtsrb",
        "npz",
        "folder",
    }


def test_missing_path_says_so(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nowhere: no such file or directory"):
        load_dataset(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"nowhere: no such file or directory"):
        load_dataset(f"cifar10:{tmp_path / 'nowhere'}")
    with pytest.raises(DataError, match=r"no such file or directory .*data source names"):
        load_dataset("not-a-source")


def test_names_that_need_a_path() -> None:
    with pytest.raises(DataError, match="mnist needs a path: mnist:PATH"):
        load_dataset("mnist")
    with pytest.raises(DataError, match="digits is built in and takes no path"):
        load_dataset("digits:/tmp")


def test_prefix_forces_the_format(tmp_path: Path) -> None:
    folder = mnist_folder(tmp_path / "m")
    with pytest.raises(DataError, match="not a CIFAR-10 python folder"):
        load_dataset(f"cifar10:{folder}")
    assert len(load_dataset(f"mnist:{folder}", part="test")) == 5


def test_unknown_option(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="roi do not apply to mnist data"):
        load_dataset(mnist_folder(tmp_path), roi=True)


def test_unknown_part(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="part must be 'train' or 'test'"):
        load_dataset(mnist_folder(tmp_path), part="validation")


@pytest.mark.slow  # a fresh interpreter importing torch: seconds on a busy machine
def test_import_stays_light() -> None:
    heavy = "{'sklearn', 'PIL', 'torchvision', 'matplotlib'}"
    code = f"import sys, poisonlab.data; print(sorted({heavy} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist_package() -> None:
    test = load_dataset("fashion-mnist", part="test")
    assert len(test) == 10000 and test.shape == (1, 28, 28)
    assert test.class_names[0] == "T-shirt/top" and test.class_names[9] == "Ankle boot"
    assert test.class_counts() == [1000] * 10
    assert test.ids[17] == "t10k-images-idx3-ubyte.gz#17"
    assert has_test_part("fashion-mnist")


def test_fashion_mnist_missing_package_explains(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import poisonlab.data.builtin as builtin

    monkeypatch.setattr(builtin, "FASHION_MNIST_DIR", tmp_path / "absent")
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist")


@pytest.mark.parametrize("spec", ["", "  "])
def test_an_empty_spec_is_refused_by_name(spec: str) -> None:
    """Issue: `poisonlab data info ""` (an unset $DATA) read the current folder as an image folder
    ("d: empty class folder"), and scan said its --out overlapped the input "."."""
    with pytest.raises(DataError, match="empty data name or path"):
        load_dataset(spec)


@pytest.mark.parametrize("spec", [0, None, ["digits"]])
def test_a_spec_that_is_not_text_is_refused_by_name(spec: object) -> None:
    """Issue: load_dataset(0) raised pathlib's raw TypeError."""
    with pytest.raises(DataError, match=r"data must be a source name or a path \(str or Path\)"):
        load_dataset(spec)  # type: ignore[arg-type]


@pytest.mark.parametrize("spec", ["npz:", "folder: ", "cifar10:"])
def test_prefix_without_a_path(spec: str) -> None:
    """ "npz:" once read the current folder ("./: a folder, not an .npz file")."""
    with pytest.raises(DataError, match="names no path"):
        load_dataset(spec)


def test_a_published_archive_says_how_to_unpack_it(tmp_path: Path) -> None:
    """CIFAR-10 and GTSRB come as archives (cifar-10-python.tar.gz, GTSRB_*.zip): given as they
    came, they were "unrecognised data file", as if the format were unknown."""
    import tarfile
    import zipfile

    folder = cifar_folder(tmp_path / "src", n=2, batches=1)
    tar_gz = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tar_gz, "w:gz") as archive:
        archive.add(folder, arcname=folder.name)
    root = gtsrb_root(tmp_path / "g", classes=(0,), per_class=1)
    zipped = tmp_path / "GTSRB_Final_Training_Images.zip"
    with zipfile.ZipFile(zipped, "w") as archive:
        for file in sorted(root.rglob("*")):
            archive.write(file, Path("GTSRB", file.relative_to(root)))
    expected = {
        tar_gz: r"a tar archive; .*\(tar xf cifar-10-python\.tar\.gz\) .*\(cifar-10-batches-py\)",
        zipped: r"a zip archive; .*\(unzip GTSRB_Final_Training_Images\.zip\) .*\(GTSRB\)$",
    }
    for path, message in expected.items():
        for spec in (path, f"cifar10:{path}", f"gtsrb:{path}", f"folder:{path}"):
            with pytest.raises(DataError, match=message):
                load_dataset(spec)


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (
            ("attack.json", "poisoned.npz", "victim/model.json"),
            r"output of poisonlab attack: pass ",
        ),
        (("summary.json", "scores.csv", "clean.npz", "model/model.json"), r"/clean\.npz for the"),
        (("model.json", "model.safetensors", "train.json"), r"not data: give it as --model"),
    ],
)
def test_a_folder_poisonlab_wrote_names_the_data_to_pass(tmp_path: Path, names, message) -> None:
    """`scan runs/bn` (the attack's folder, not its poisoned.npz) was read as an image folder:
    'runs/bn/victim/model.json: not an image file'."""
    folder = tmp_path / "out"
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("{}")
    with pytest.raises(DataError, match=rf"^{folder} is .*{message}"):
        load_dataset(folder)


def test_a_file_of_zeros_is_not_called_a_tar_archive(tmp_path: Path) -> None:
    """Python's tarfile takes zero blocks for an empty archive: a zero-filled file (a copy or
    download cut short) was to be unpacked with tar xf, which unpacks nothing."""
    import tarfile
    import zipfile

    zeros = tmp_path / "train.dat"
    zeros.write_bytes(bytes(4096))
    empty_tar, empty_zip = tmp_path / "empty.tar", tmp_path / "empty.zip"
    tarfile.open(empty_tar, "w").close()
    zipfile.ZipFile(empty_zip, "w").close()
    for path in (zeros, empty_tar, empty_zip):
        with pytest.raises(DataError) as caught:
            load_dataset(path)
        assert "archive" not in str(caught.value)
        assert str(caught.value).startswith(f"{path}: unrecognised data file")


@pytest.mark.parametrize("arcname", ["", "."])  # tar czf pets.tgz cat dog, or run in the folder
@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_an_archive_of_class_folders_names_no_class_as_the_folder_to_pass(
    tmp_path: Path, kind: str, arcname: str
) -> None:
    """An image folder archived from inside (cat/, dog/ at the top) was to be passed as its first
    member's folder, 'cat', one class of it."""
    import tarfile
    import zipfile

    files = []
    for name in ("cat", "dog"):
        (tmp_path / "pets" / name).mkdir(parents=True)
        files.append(tmp_path / "pets" / name / "1.txt")
        files[-1].write_text("x")
    archive_path = tmp_path / f"pets.{kind}"
    if kind == "tar":
        with tarfile.open(archive_path, "w") as archive:
            archive.add(tmp_path / "pets", arcname=arcname)
    else:
        with zipfile.ZipFile(archive_path, "w") as archive:
            for file in files:
                archive.write(file, Path(arcname, file.relative_to(tmp_path / "pets")))
    with pytest.raises(DataError, match=r"and pass the folder you unpack it into$"):
        load_dataset(archive_path)


def test_the_unpack_command_can_be_pasted_for_a_name_with_spaces(tmp_path: Path) -> None:
    """'(tar xf cifar 10.tar.gz)' named two files to tar."""
    import tarfile

    folder = cifar_folder(tmp_path / "src", n=2, batches=1)
    path = tmp_path / "cifar 10.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        archive.add(folder, arcname=folder.name)
    with pytest.raises(DataError, match=r"\(tar xf 'cifar 10\.tar\.gz'\) and pass"):
        load_dataset(path)


def test_image_shape_reads_headers_and_agrees_with_loading(tmp_path: Path) -> None:
    """What a dry run checks a trigger against: the (C, H, W) loading would give, for every
    source, from metadata or headers; None (loading explains) when a header does not read."""
    import numpy as np

    gray = tmp_path / "gray.npz"
    np.savez(gray, x=np.zeros((4, 7, 9), np.uint8), y=np.arange(4) % 2)
    color = tmp_path / "color.npz"
    np.savez(color, x=np.zeros((4, 5, 6, 3), np.float32), y=np.arange(4) % 2)
    write_image(tmp_path / "pets" / "cat" / "a.png", (10, 6), mode="L")
    write_image(tmp_path / "pets" / "dog" / "b.png", (4, 4), mode="RGB")
    specs = [
        "digits",
        str(mnist_folder(tmp_path / "mnist")),
        str(tmp_path / "mnist" / "train-labels-idx1-ubyte.gz"),
        str(cifar_folder(tmp_path / "cifar", batches=1)),
        str(gtsrb_root(tmp_path / "gtsrb")),
        str(gray),
        f"npz:{color}",
        str(tmp_path / "pets"),
    ]
    for spec in specs:
        assert image_shape(spec) == load_dataset(spec).shape, spec
    assert image_shape(gray) == (1, 7, 9) and image_shape(tmp_path / "pets") == (3, 6, 10)
    np.savez(tmp_path / "no_x.npz", y=np.arange(3))
    assert image_shape(tmp_path / "no_x.npz") is None
