"""Train a model in a second Python process while this one keeps working.

Why. On small images ``poisonlab scan`` trains its models on one thread each (the thread policy,
:func:`poisonlab.runtime.auto_threads`), so on a machine with two or more cores one core sits
idle while it trains. The LGM model (``lgm-net``, 40 epochs) is the longest single step of a
``--defense all`` scan, and only the LGM detectors read it: training it in a child process on
the free core while this process trains the softmax model and runs every other defense makes
the scan take the longer of the two paths instead of their sum (bench/results/scan_speed.md).

Why a process and not a thread. :func:`~poisonlab.train.train_model` seeds torch's global RNG,
which the defenses running beside it also draw from (dropout, Monte-Carlo sampling); in one
process the two would change each other's random numbers and the scores would depend on timing.
A child has its own RNG, and its own interpreter lock.

The child, ``python -m poisonlab.train.background FOLDER``, reads the job from FOLDER
(``job.json``: the model config, its initialisation seed, the recipe, the thread count and the
images' memory layout; ``data.safetensors``: images and labels), builds the model as
:func:`~poisonlab.models.build_model` does here, trains it with the same loop on the same number
of threads, and writes a checkpoint and the history. The network that comes back is the one this
process would have trained, weight for weight (tests/train/test_background.py). Nothing is
unpickled: tensors travel as safetensors, everything else as JSON.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from poisonlab.errors import PoisonlabError

if TYPE_CHECKING:
    from poisonlab.data.dataset import ImageDataset
    from poisonlab.models import ModelConfig, Network
    from poisonlab.train.config import TrainConfig
    from poisonlab.train.loop import TrainResult

JOB, DATA, MODEL, HISTORY, LOG = "job.json", "data.safetensors", "model", "history.json", "log.txt"
PROGRESS = "progress.json"  # the child's training state (poisonlab.progress.report_to)
POLL_SECONDS = 0.2  # how often the parent, waiting, reads it
# Below this many image-epochs (training images × epochs) a child's start-up (importing torch,
# ~1.5 s of CPU) costs more than the overlap can save: train in this process instead.
MIN_WORK = 20_000


class BackgroundTraining:
    """One training run in a child process; :meth:`result` waits for it and returns the model.

    Parameters
    ----------
    config, seed : the model to build (``build_model(config, seed=seed)``)
    data : the training set (a validation split is taken from it by the recipe, as in-process)
    recipe : the TrainConfig
    threads : intra-op threads of the child (the caller's own count gives identical weights)

    Use it as a context manager (or call :meth:`cancel`): leaving the block without collecting
    the result stops the child and removes its folder. While :meth:`result` waits, the child's
    training shows as this process's stage "training ARCH (HEAD)" (a bar, or lines in a log),
    as a training in this process would: the child reports its steps to a file.
    """

    def __init__(
        self,
        config: ModelConfig,
        data: ImageDataset,
        recipe: TrainConfig,
        *,
        seed: int,
        threads: int,
    ) -> None:
        from safetensors.torch import save_file

        self.description = f"{config.arch} ({config.head})"
        self._folder = Path(tempfile.mkdtemp(prefix="poisonlab-train-"))
        job = {
            "model": config.to_dict(),
            "seed": seed,
            "recipe": recipe.to_dict(),
            "threads": threads,
            "num_classes": data.num_classes,
            # the layout of the images, not only their values, decides torch's kernels: a
            # one-channel tensor loaded from NHWC arrays has strides (HW, 1, W, 1), which torch
            # also reads as channels-last, and its convolutions then round differently
            "image_strides": list(data.images.stride()),
            "name": data.name,
        }
        (self._folder / JOB).write_text(json.dumps(job))
        tensors = {"images": data.images.contiguous(), "labels": data.labels.contiguous()}
        save_file(tensors, str(self._folder / DATA))
        env = dict(os.environ)
        here = str(Path(__file__).resolve().parents[2])  # the folder holding this poisonlab
        env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
        command = [sys.executable, "-m", "poisonlab.train.background", str(self._folder)]
        self._started = time.monotonic()
        with (self._folder / LOG).open("wb") as log:  # a file, not a pipe: it never fills up
            self._process: subprocess.Popen[bytes] | None = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
            )

    def result(self) -> tuple[Network, TrainResult]:
        """Wait for the child; the trained network (CPU, eval mode) and its history.

        Raises PoisonlabError with the child's last output when it failed.
        """
        from poisonlab.models import load_checkpoint
        from poisonlab.train.loop import EpochRecord, TrainResult

        if self._process is None:
            raise PoisonlabError("this background training was already collected or cancelled")
        try:
            self._wait()
            network = load_checkpoint(self._folder / MODEL).model
            saved = json.loads((self._folder / HISTORY).read_text())
            history = TrainResult(
                [EpochRecord(**r) for r in saved["history"]],
                saved["best_epoch"],
                saved["stopped_early"],
            )
            return network, history
        finally:
            self.cancel()

    def _wait(self) -> None:
        """Wait for the child, showing its training as a stage here; PoisonlabError with the
        child's last output when it failed (the stage then writes no "done" line)."""
        from poisonlab import progress

        process = self._process
        assert process is not None
        with progress.bar(f"training {self.description}", None, started=self._started) as bar:
            code = None
            while code is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    code = process.wait(timeout=POLL_SECONDS)
                state = progress.read_report(self._folder / PROGRESS)
                if state is not None:
                    bar.show(float(state["done"]), state["total"], str(state["info"]))
            self._process = None
            if code != 0:
                tail = (self._folder / LOG).read_text(errors="replace").strip().splitlines()[-5:]
                raise PoisonlabError(
                    f"training {self.description} in a child process failed (exit code {code}): "
                    + " | ".join(tail)
                )

    def cancel(self) -> None:
        """Stop the child if it still runs and delete its folder (safe to call twice)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None
        shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self) -> BackgroundTraining:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


def worth_it(n_images: int, epochs: int, threads: int) -> bool:
    """Whether a second process can train beside this one on a core of its own, and the run is
    long enough to pay for the child's start-up (:data:`MIN_WORK`)."""
    from poisonlab.runtime import cpu_count

    return cpu_count() >= 2 * threads and n_images * epochs >= MIN_WORK


def _child(folder: Path) -> None:
    """The child's side: train the job in ``folder`` and write the checkpoint and history."""
    from poisonlab import progress, runtime

    job = json.loads((folder / JOB).read_text())
    runtime.use_threads(int(job["threads"]))
    progress.report_to(folder / PROGRESS)  # the parent shows the training from there
    import torch
    from safetensors.torch import load_file

    from poisonlab.data.dataset import ImageDataset
    from poisonlab.models import ModelConfig, build_model, save_checkpoint
    from poisonlab.train.config import TrainConfig
    from poisonlab.train.loop import train_model

    tensors = load_file(str(folder / DATA))
    images = tensors["images"]
    images = torch.empty_strided(images.shape, tuple(job["image_strides"])).copy_(images)
    data = ImageDataset(images, tensors["labels"], int(job["num_classes"]), name=str(job["name"]))
    network = build_model(ModelConfig.from_dict(job["model"]), seed=int(job["seed"]))
    result = train_model(network, data, TrainConfig(**job["recipe"]), device="cpu")
    save_checkpoint(network, folder / MODEL)
    saved: dict[str, Any] = {
        "history": [asdict(r) for r in result.history],
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
    }
    (folder / HISTORY).write_text(json.dumps(saved))


if __name__ == "__main__":
    _child(Path(sys.argv[1]))
