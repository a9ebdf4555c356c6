"""Find poisoned samples in a training set: the library form of ``poisonlab scan``.

``scan(data, defenses="all", holdout=None, model=None, ...)`` scores every sample of ``data``
(an :class:`~poisonlab.data.ImageDataset`, or a path or data name that
:func:`poisonlab.data.load_dataset` loads) with each selected defense, trains the default model
on it when no ``model`` is given, skips a defense whose needs are not met (DeepFeatures without
``holdout``) with the reason, judges every class and decides which samples to remove.

It returns a :class:`ScanResult`: ``verdict`` (one line, e.g. "class 8 looks poisoned: 31
suspicious samples; classes 0–7, 9 look clean"), ``decision`` (the classes named and the samples
removed), ``outcomes`` (per defense its scores and flags, or why it was skipped), ``models`` and
``clean()`` (the data without the removed samples). It raises
:class:`~poisonlab.errors.ConfigError` or :class:`~poisonlab.errors.DataError` with a one-line
message for a bad name, parameter or input, or when no selected defense could run.
``help(poisonlab.scan.scan)`` lists every argument.

``write_scan(result, directory)`` writes what the command writes: ``scores.csv``,
``summary.json`` (``scan_summary(result)`` as a dict) and ``clean.npz``. ``resolve_defenses``,
``build_detectors``, ``train_default_model`` and ``default_architecture`` expose the steps on
their own.

Example::

    from poisonlab.scan import scan, write_scan

    result = scan("train.npz", defenses="all", holdout="holdout.npz")
    print(result.verdict)
    write_scan(result, "scan-out")
"""

# The code lives in poisonlab.workflows.scan and poisonlab.workflows.scan_output; this package
# re-exports their public names. A test that patches the pipeline patches those modules.

from __future__ import annotations

from poisonlab.workflows.scan import (
    DefenseOutcome,
    ModelUsed,
    ScanResult,
    build_detectors,
    default_architecture,
    resolve_defenses,
    scan,
    train_default_model,
)
from poisonlab.workflows.scan_output import scan_summary, write_scan

__all__ = [
    "DefenseOutcome",
    "ModelUsed",
    "ScanResult",
    "build_detectors",
    "default_architecture",
    "resolve_defenses",
    "scan",
    "scan_summary",
    "train_default_model",
    "write_scan",
]
