"""Check an experiment config by planning every cell, before anything runs.

A config is valid when every cell of its grid could start: its attack and detectors can be built,
its ``[data]``, ``[model]``, ``[train]`` and ``[task]`` sections parse, and (for a run or a dry run)
its data source is there. Nothing reads annotation strings: each section is checked by the code
that will use it, so the checks cannot drift from what runs:

- ``[data]``: :meth:`~poisonlab.experiments.tasks_common.DataSpec.from_section`; with
  ``data=True`` also :func:`~poisonlab.data.loaders.check_source` (the file exists and its format
  is recognised; once per distinct source) and that a source given an ``image_size`` is one that
  is resized (:meth:`~poisonlab.experiments.tasks_common.DataSpec.loader_options`); a flat pair of
  integers as ``image_size`` is refused (an axis of two squares that reads like one [H, W]);
- ``[model]``: :class:`~poisonlab.models.ModelConfig` with a placeholder geometry (the real one
  comes from the data) and ``arch`` among the registered architectures;
- ``[train]``: :class:`~poisonlab.train.TrainConfig`;
- ``[[defenses]]``: every detector built (:func:`~poisonlab.experiments.tasks_common.build_detectors`),
  entry by entry, so that each wrong entry is reported;
- ``[attack]`` and ``[task]``: the kind's planner (:data:`~poisonlab.experiments.tasks_base.PLANS`),
  which builds the attack the way the task will (a zero budget is a clean cell, presets merged...);
  a kind without a planner gets its ``[attack]`` built as given;
- with ``data=True``, the plan against the images: a plan's ``check_image_shape`` (a backdoor
  trigger's size and place) gets the (C, H, W) that :func:`~poisonlab.data.loaders.image_shape`
  reads from the source's metadata or headers (at the ``image_size`` when given), once per
  distinct source and size.

**Every error, not the first.** A planner stops at its first error, so when that error belongs to
a section that was already reported (``[data]``, ``[task]``, ``[[defenses]]``), the cell is planned
again with that section emptied, to find the errors behind it. Identical messages from several
cells are reported once, with the cells they occur in.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from poisonlab.errors import ConfigError, PoisonlabError
from poisonlab.experiments.grid import SECTIONS, GridCell
from poisonlab.experiments.tasks_base import PLANS, CellSpec
from poisonlab.validation import ParameterError, short_repr

if TYPE_CHECKING:
    from poisonlab.experiments.config import ExperimentConfig

_PLACEHOLDER_GEOMETRY: dict[str, Any] = {
    "in_channels": 1,
    "height": 32,
    "width": 32,
    "num_classes": 10,
}
_MAX_CELLS_SHOWN = 3
_MAX_REPLANS = 4


class ConfigProblems(ConfigError):
    """Every problem found in a config; one line per problem (the first line names the file)."""

    def __init__(self, where: str, problems: Sequence[str]) -> None:
        self.where = where
        self.problems = tuple(problems)
        if len(self.problems) == 1:
            text = f"{where}: {self.problems[0]}"
        else:
            listed = "\n".join(f"  {p}" for p in self.problems)
            text = f"{where}: {len(self.problems)} problems:\n{listed}"
        super().__init__(text)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled (a worker process) and copied as its file and problems: an exception's default,
        its message as the one argument, fails with a TypeError on load."""
        return type(self), (self.where, self.problems)


def check_cells(
    config: ExperimentConfig, cells: Sequence[GridCell], *, data: bool = False
) -> list[str]:
    """Every problem of every cell, merged across cells (``problem (cells #1 ...; #3 ...)``).

    Parameters
    ----------
    config : ExperimentConfig
        The config the cells come from (its lists tell grid axes apart, for hints).
    cells : sequence of GridCell
        Its expanded grid.
    data : bool
        Also check that each distinct data source exists and is readable as data.
    """
    found: dict[str, list[GridCell]] = {}
    sources: dict[str, str | None] = {}
    shapes: dict[tuple[str, tuple[int, int] | None], tuple[int, int, int] | None] = {}
    for cell in cells:
        for message in _cell_problems(config, cell, data=data, sources=sources, shapes=shapes):
            found.setdefault(message, []).append(cell)
    merged = [message + _which(hit, len(cells)) for message, hit in found.items()]
    return [*_ambiguous_axes(config), *merged]


def _ambiguous_axes(config: ExperimentConfig) -> list[str]:
    """A flat pair of integers as ``[data] image_size``: by the grid rule an axis of two squares,
    and read as one [HEIGHT, WIDTH] it would run other sizes without a word; refused, with both
    spellings."""
    values = config.data.get("image_size")
    if not isinstance(values, list) or len(values) != 2 or any(type(v) is not int for v in values):
        return []
    squares = ", ".join(f"[{v}, {v}]" for v in values)
    return [
        f"[data] image_size = {short_repr(values)} is a grid axis of squares, as every list is; "
        f"one size is written as a list of lists, image_size = [{short_repr(values)}] (or "
        f'"HEIGHTxWIDTH"), an axis of squares as image_size = [{squares}]'
    ]


def _which(hit: Sequence[GridCell], total: int) -> str:
    """`` (cells #0 rate=1.5 seed=0; ...)``, or `` (all N cells)`` when every cell has it."""
    if len(hit) == total:
        return "" if total == 1 else f" (all {total} cells)"
    shown = "; ".join(f"#{c.index} {c.description}" for c in hit[:_MAX_CELLS_SHOWN])
    more = f" and {len(hit) - _MAX_CELLS_SHOWN} more" if len(hit) > _MAX_CELLS_SHOWN else ""
    return f" (cell{'s' if len(hit) > 1 else ''} {shown}{more})"


def _cell_problems(
    config: ExperimentConfig,
    cell: GridCell,
    *,
    data: bool,
    sources: dict[str, str | None],
    shapes: dict[tuple[str, tuple[int, int] | None], tuple[int, int, int] | None],
) -> list[str]:
    from poisonlab.experiments.tasks_common import DataSpec

    spec = cell.spec
    problems: list[str] = []
    failed: set[str] = set()

    def attempt(check: Callable[[], Any]) -> Any:
        try:
            return check()
        except PoisonlabError as exc:
            section = _section_of(exc)
            if section:
                failed.add(section)
            problems.append(_explain(exc, section, config, cell))
            return None

    data_spec = attempt(lambda: DataSpec.from_section(spec.section("data")))
    attempt(lambda: _check_model(spec.section("model")))
    attempt(lambda: _check_train(spec.section("train")))
    defenses = list(spec.params.get("defenses") or [])
    for number, entry in enumerate(defenses, start=1):
        attempt(functools.partial(_check_defense, entry, number, spec.seed))
    if "defenses" not in failed:
        attempt(lambda: _check_defenses(spec))  # together: a name listed twice
    planner = PLANS.get(config.kind) if config.kind in PLANS else _plan_generic
    planned = dict(spec.params)
    plan = None  # the cell's plan, when it plans with no section emptied
    for _ in range(_MAX_REPLANS):
        before = set(failed)
        for section in failed:  # plan past the sections already reported
            planned[section] = [] if section == "defenses" else {}
        try:
            whole = planner(CellSpec(spec.experiment, spec.kind, planned))
            plan = None if failed else whole
            break
        except PoisonlabError as exc:
            culprit = _section_of(exc)
            message = _explain(exc, culprit, config, cell)
            if message not in problems:
                problems.append(message)
            if culprit is None or culprit in before or culprit == "attack":
                break
            failed.add(culprit)
    source = data_spec.source if data_spec is not None else spec.section("data").get("source")
    if data and isinstance(source, str) and source:  # also when another [data] key is wrong
        if source not in sources:
            sources[source] = _source_problem(source)
        size = data_spec.image_size if data_spec is not None else None
        if sources[source]:
            problems.append(sources[source])  # type: ignore[arg-type]
        elif data_spec is not None and attempt(data_spec.loader_options) is None:
            pass  # an image size for a format that is not resized: reported
        elif callable(check_shape := getattr(plan, "check_image_shape", None)):
            if (source, size) not in shapes:
                shapes[source, size] = _image_shape(source, size)
            shape = shapes[source, size]
            if shape is not None:
                attempt(lambda: check_shape(shape))
    return problems


def _image_shape(source: str, size: tuple[int, int] | None) -> tuple[int, int, int] | None:
    from poisonlab.data.loaders import image_shape

    try:
        return image_shape(source, size)
    except PoisonlabError:
        return None  # check_source reported it


def _source_problem(source: str) -> str | None:
    from poisonlab.data.loaders import DATA_SOURCES, check_source

    try:
        check_source(source)
    except PoisonlabError as exc:
        hint = ""
        prefix, sep, rest = source.partition(":")
        path = Path(rest if sep and prefix in DATA_SOURCES else source).expanduser()
        relative = source not in DATA_SOURCES and not path.is_absolute()
        if relative and not path.exists():  # written relative to the config file?
            hint = f" (a relative path is read from the current folder, {Path.cwd()})"
        return f"[data] source: {exc}{hint}"  # the message names the spec or path
    return None


def _check_model(section: dict[str, Any]) -> None:
    """``[model]``: registered ``arch`` and ModelConfig fields (the geometry comes from the data)."""
    from poisonlab.experiments.tasks_common import check_keys
    from poisonlab.models import ModelConfig, model_names
    from poisonlab.validation import Options, check_param

    params = dict(section)
    arch = check_param("[model]", "arch", params.pop("arch", None), [None, Options(model_names())])
    fields = [f.name for f in dataclasses.fields(ModelConfig)]
    check_keys(
        params, tuple(f for f in fields if f not in ("arch", *_PLACEHOLDER_GEOMETRY)), "model"
    )
    ModelConfig(arch or model_names()[0], **_PLACEHOLDER_GEOMETRY, **params)


def _check_train(section: dict[str, Any]) -> None:
    """``[train]``: TrainConfig fields over its defaults (a task applies them over its recipe)."""
    from poisonlab.experiments.tasks_common import check_keys
    from poisonlab.train import TrainConfig

    check_keys(section, tuple(f.name for f in dataclasses.fields(TrainConfig)), "train")
    TrainConfig(**section)


def _check_defense(entry: dict[str, Any], number: int, seed: int) -> None:
    """One ``[[defenses]]`` entry: a registered ``name`` and the keywords its detector takes."""
    from poisonlab.defenses import detector_names
    from poisonlab.experiments.tasks_common import build_detectors

    name, names = entry.get("name"), ", ".join(detector_names())
    if not isinstance(name, str):
        raise ConfigError(f"[[defenses]] #{number} needs name = one of: {names}")
    if name not in detector_names():
        raise ConfigError(
            f"[[defenses]] #{number}: unknown defense {name!r}; choose one of: {names}"
        )
    build_detectors([entry], seed=seed)


def _check_defenses(spec: CellSpec) -> None:
    from poisonlab.experiments.tasks_common import build_detectors

    build_detectors(list(spec.params.get("defenses") or []), seed=spec.seed)


def _plan_generic(spec: CellSpec) -> None:
    """For kinds without a planner: ``[attack]`` built as given (``name`` + keywords)."""
    from poisonlab.attacks import attack_names, build_attack
    from poisonlab.experiments.tasks_common import attack_error

    params = spec.section("attack")
    if not params:
        return
    name = params.pop("name", None)
    if name not in attack_names():
        raise ConfigError(
            f"[attack] needs name = one of: {', '.join(attack_names())}, got {name!r}"
        )
    try:
        build_attack(name, **params)
    except ParameterError:
        raise  # names the attack, the parameter and its range already
    except ConfigError as exc:
        raise attack_error(exc, name) from None


def _section_of(exc: PoisonlabError) -> str | None:
    """Which section an error belongs to: from a ParameterError's owner, or the message's prefix."""
    from poisonlab.attacks import attack_names
    from poisonlab.defenses import detector_names

    if isinstance(exc, ParameterError):
        owner = exc.owner
        if owner in ("[data]", "[task]", "[model]", "[train]"):
            return owner.strip("[]")
        if owner in ("model", "train"):
            return owner
        if owner in detector_names():
            return "defenses"
        if owner in attack_names() or owner in ("trigger", "budget", "pgd", ""):
            return "attack"
    text = str(exc)
    for prefix, section in (
        ("[[defenses]]", "defenses"),
        ("[data]", "data"),
        ("[task]", "task"),
        ("[attack]", "attack"),
        ("[model]", "model"),
        ("[train]", "train"),
    ):
        if text.startswith(prefix):
            return section
    if text.startswith("defense ") or any(text.startswith(f"{n} ") for n in detector_names()):
        return "defenses"
    return None


def _explain(
    exc: PoisonlabError, section: str | None, config: ExperimentConfig, cell: GridCell
) -> str:
    """The message with its section named, and the grid rule when a list became an axis."""
    text = str(exc)
    if isinstance(exc, ParameterError) and exc.owner in ("model", "train"):
        text = f"[{exc.owner}] {exc.param} must be {exc.expected}, got {short_repr(exc.value)}"
    label = {
        "attack": "[attack]",
        "defenses": "[[defenses]]",
        "model": "[model]",
        "train": "[train]",
    }
    prefix = label.get(section or "", "")
    if prefix and not text.startswith(prefix):
        text = f"{prefix} {text}"
    if isinstance(exc, ParameterError):
        text += _hint(exc, section, config)
    return text


def _hint(exc: ParameterError, section: str | None, config: ExperimentConfig) -> str:
    """Why a value that looks right is wrong: a flat list became an axis, or a list in defenses."""
    if section == "defenses" and isinstance(exc.value, list):
        return " (lists in [[defenses]] are values, not grid axes)"
    if not exc.wants_list:
        return ""
    for name in SECTIONS:
        values = getattr(config, name).get(exc.param)
        if (
            isinstance(values, list)
            and not isinstance(exc.value, list)
            and any(v == exc.value and not isinstance(v, list) for v in values)
        ):
            return (
                f" ([{name}] {exc.param} = {short_repr(values)} is a grid axis, as every list is; "
                f"one list value is written as a list of lists: {exc.param} = [{short_repr(values)}])"
            )
    return ""
