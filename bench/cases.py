"""The scan cases the speed benchmarks use, built here so a benchmark makes its own data.

- :func:`digits_case`: the case of issue 9, all 1,797 scikit-learn digits plus 31 copies of
  class-3 images carrying the 4-pixel pattern, relabelled 8 (BadNets one-to-one, ``count=31``,
  appended): 1,828 images of 8×8 with one backdoored class.
- :func:`fashion_case`: Fashion-MNIST at full size: the 60,000 official training images split
  into 54,000 to poison and a stratified 6,000-image clean held-out set, then BadNets at 10% of
  the poisoned set (6,000 poisons appended, all-to-all y → y+1, the 4-pixel pattern): 60,000
  images to scan. Needs ``apt-get install dataset-fashion-mnist``.

Both are written as .npz files with ``is_poison`` (``poisonlab attack``'s format), so
``poisonlab scan`` reads them and the benchmarks score the flags against the ground truth.
Files are built once per folder and reused.
"""

from __future__ import annotations

from pathlib import Path

from poisonlab.attacks import build_attack
from poisonlab.seeding import make_generator


def digits_case(folder: Path) -> Path:
    """``folder/digits_case.npz`` (built when missing)."""
    path = folder / "digits_case.npz"
    if not path.exists():
        from poisonlab.data import load_dataset

        folder.mkdir(parents=True, exist_ok=True)
        attack = build_attack("badnets", source=3, target=8, count=31, trigger="pattern")
        attack.poison(load_dataset("digits"), generator=make_generator(0)).save(path)
    return path


def fashion_case(folder: Path) -> tuple[Path, Path]:
    """``folder/fashion_case.npz`` (60,000 images to scan) and ``folder/fashion_holdout.npz``."""
    data, holdout = folder / "fashion_case.npz", folder / "fashion_holdout.npz"
    if not (data.exists() and holdout.exists()):
        from poisonlab.data import save_npz
        from poisonlab.data.prepare import prepare_splits

        folder.mkdir(parents=True, exist_ok=True)
        split = prepare_splits("fashion-mnist", holdout=0.1, seed=0)
        attack = build_attack("badnets", rate=0.1)
        attack.poison(split.train, generator=make_generator(0)).save(data)
        save_npz(split.holdout, holdout)
    return data, holdout
