"""`poisonlab attack NAME`: poison a training set, save it with its ground truth, measure the attack.

How the command is built, so another attack can join it:

- Every option that is an attack hyper-parameter defaults to None, is named like the attack's
  keyword argument and is listed in ``ATTACK_OPTIONS``; only the options actually given are
  passed to the attack, plus any ``--param key=value``. :func:`attack_kwargs` checks the names
  against the attack's ``__init__`` signature, so ``--eps`` with badnets is one red line, not a
  silent no-op. A new attack adds its options to :func:`attack_command` and to ``ATTACK_OPTIONS``.
- Poisoning and measuring live in :mod:`poisonlab.workflows.attack_run` (``run_attack``); a new
  attack's measurement is registered there in ``EVALUATORS``.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from poisonlab import runtime
from poisonlab.cli import catalog
from poisonlab.cli.common import (
    DATA,
    DEVICE,
    FORCE,
    IMAGE_SIZE,
    LIMIT,
    QUIET,
    SEED,
    THREADS,
    VERBOSE,
    check_device,
    check_epochs,
    check_limit,
    check_output_apart,
    check_threads,
    input_paths,
    loader_options,
    parse_image_size,
    use_threads,
)
from poisonlab.cli.console import configure, out, user_errors
from poisonlab.cli.main import app
from poisonlab.cli.output import check_output_dir, output_folder
from poisonlab.errors import ConfigError, PoisonlabError
from poisonlab.ranges import counted
from poisonlab.validation import reword_keywords

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from rich.table import Table

    from poisonlab.attacks import PoisonedDataset

COLORS = {"white": (255, 255, 255), "yellow-green": (245, 255, 0), "black": (0, 0, 0)}
BUDGET = "Budget (give one)"
TRIGGER = "Trigger"
LABELS = "Labels"
PGD = "Label-consistent (PGD)"
COLLISION = "Feature collision"
EVAL = "Evaluation"
ATTACK_OPTIONS = (
    *("rate", "target_rate", "count", "label_map", "source", "target", "mode"),
    *("trigger", "size", "color", "gray", "position", "offset", "window", "amplitude"),
    *("eps", "steps", "step_size", "surrogate_epochs"),
    *("num_targets", "bases_per_target", "beta0", "max_iter", "watermark", "layer"),
)
"""Options of :func:`attack_command` passed to the attack (under these keyword names) when given."""
OPTION_FLAGS = {
    **{"num_targets": "--targets", "max_iter": "--max-iters"},
    **{"surrogate_arch": "--arch", "device": "--device"},  # set by the command from these
}
"""Attack keywords whose flag is not the keyword written with dashes."""
ATTACK_FILES = ("poisoned.npz", "attack.json", "model", "victim", "baseline")
"""What an attack writes into --out (poisonlab.workflows.attack_run): --force replaces a folder
holding only these."""


def parse_color(text: str | None) -> tuple[int, int, int] | None:
    """``"245,255,0"``, ``"#f5ff00"`` or a name (white, yellow-green, black) → (R, G, B)."""
    if text is None:
        return None
    text = text.strip().lower()
    if text in COLORS:
        return COLORS[text]
    try:
        if text.startswith("#") and len(text) == 7:
            return tuple(int(text[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
        parts = tuple(int(v) for v in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3:
        raise ConfigError(
            f"--color {text!r}: expected R,G,B (0..255), #rrggbb or one of {', '.join(COLORS)}"
        )
    return parts  # type: ignore[return-value]


def parse_window(text: str | None) -> tuple[int, int] | None:
    """``"10x15"`` (rows × columns) → (10, 15)."""
    if text is None:
        return None
    try:
        rows, cols = (int(v) for v in text.lower().replace(",", "x").split("x"))
    except ValueError:
        raise ConfigError(f"--window {text!r}: expected ROWSxCOLS, e.g. 10x15") from None
    return rows, cols


def parse_params(items: list[str] | None) -> dict[str, Any]:
    """``--param key=value`` pairs; values are read as JSON (numbers, lists, true) or else text."""
    params: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--param {item!r}: expected key=value")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        params[key.strip().replace("-", "_")] = value
    return params


def attack_kwargs(name: str, given: dict[str, Any]) -> dict[str, Any]:
    """The given options as keyword arguments of attack ``name``; unknown names raise ConfigError."""
    from poisonlab.attacks import ATTACKS, attack_names

    attack_names()  # fills the registry
    init = ATTACKS.get(name).__init__
    accepted = [
        p.name for p in inspect.signature(init).parameters.values() if p.kind is p.KEYWORD_ONLY
    ]
    unknown = sorted(k for k in given if k not in accepted)
    if unknown:
        flags = ", ".join(_flag(k) for k in unknown)
        takes = ", ".join(_flag(k) for k in accepted if not _flag(k).startswith("--param"))
        rest = [k for k in accepted if _flag(k).startswith("--param")]
        takes += f"; as --param key=value: {', '.join(rest)}" if rest else ""
        raise ConfigError(f"attack {name!r} does not take {flags} (it takes: {takes})")
    return dict(given)


def as_typed(message: str) -> str:
    """``message`` with the attack keywords it names as the options a user types: ```window=(10,
    15)``` → ``--window 10x15``, ```position='random'``` → ``--position random``, ```offset```
    → ``--offset``; other backticked words stay."""

    def typed(key: str, value: str | None) -> str | None:
        if key not in ATTACK_OPTIONS:
            return None
        if value is None:
            return _flag(key)
        numbers = re.fullmatch(r"\((\d+(?:, \d+)*)\)", value)
        if re.fullmatch(r"'[^']*'", value):
            value = value[1:-1]
        elif numbers and key in ("window", "color"):  # as parse_window and parse_color read them
            value = numbers.group(1).replace(", ", "x" if key == "window" else ",")
        return f"{_flag(key)} {value}"

    return reword_keywords(message, typed)


@contextmanager
def options_as_typed() -> Iterator[None]:
    """Inside: a user error that names attack keywords names them as this command's options
    (:func:`as_typed`); the error keeps its type."""
    try:
        yield
    except PoisonlabError as exc:
        exc.args = (as_typed(str(exc)), *exc.args[1:])
        raise


def _flag(key: str) -> str:
    """How a user gives keyword ``key``: its option (``--targets`` for num_targets) or --param."""
    if key in OPTION_FLAGS:
        return OPTION_FLAGS[key]
    return "--" + key.replace("_", "-") if key in ATTACK_OPTIONS else f"--param {key}"


def _summary_table(name: str, poisoned: PoisonedDataset, metrics: dict[str, Any]) -> Table:
    """Clean accuracy and ASR / MASR per model; for feature collision, whose targets are few,
    the success rate with its 95% Wilson interval instead (MASR does not apply to it)."""
    from rich.table import Table

    table = Table(
        title=f"{name}: {counted(poisoned.n_poison, 'poison')} in {len(poisoned.dataset)} images"
    )
    collision = any(isinstance(v, dict) and "success_rate" in v for v in metrics.values())
    last = ("success", "95% interval") if collision else ("ASR", "MASR")
    for column in ("model", "clean accuracy", *last):
        table.add_column(column, justify="right")
    for role, values in metrics.items():
        if isinstance(values, dict) and "clean_accuracy" in values:
            masr = values.get("masr")
            rate = values.get("success_rate")
            if rate is not None:
                extra = f"{100 * rate['low']:.1f}–{100 * rate['high']:.1f}%"
            elif collision:
                extra = "-"
            else:
                extra = "-" if masr is None else f"{100 * masr:.2f}%"
            table.add_row(
                role,
                f"{100 * values['clean_accuracy']:.2f}%",
                f"{100 * values['asr']:.2f}%",
                extra,
            )
    return table


@app.command("attack")
@user_errors
def attack_command(
    name: str = typer.Argument(..., metavar="NAME", help=f"Attack: {', '.join(catalog.ATTACKS)}."),
    out_dir: Path = typer.Option(
        ..., "--out", "-o", help="Folder for poisoned.npz and attack.json."
    ),
    data: str = DATA,
    model: Path | None = typer.Option(
        None,
        "--model",
        "-m",
        help="Trained checkpoint folder: the surrogate for label-consistent (else one is trained).",
    ),
    arch: str | None = typer.Option(
        None,
        "--arch",
        help="Victim (and surrogate) architecture (default: the --model's, or cnn-small).",
    ),
    rate: float | None = typer.Option(
        None,
        help="Poisons as a fraction of the poisoned training set (0..1; badnets default: 0.2).",
        rich_help_panel=BUDGET,
    ),
    target_rate: float | None = typer.Option(
        None,
        help="Poisons as a fraction of the target class (0..1; label-consistent default: 0.33).",
        rich_help_panel=BUDGET,
    ),
    count: int | None = typer.Option(None, help="Exact number of poisons.", rich_help_panel=BUDGET),
    label_map: str | None = typer.Option(
        None,
        help="badnets: all-to-all, all-to-one or one-to-one (default: from --source/--target).",
        rich_help_panel=LABELS,
    ),
    source: int | None = typer.Option(
        None, help="Source class (one-to-one).", rich_help_panel=LABELS
    ),
    target: int | None = typer.Option(
        None, help="Target class (label-consistent default: 0).", rich_help_panel=LABELS
    ),
    mode: str | None = typer.Option(
        None,
        help="badnets: append poisons (default) or replace the chosen rows.",
        rich_help_panel=LABELS,
    ),
    trigger: str | None = typer.Option(
        None,
        help="pattern, square, sticker or checkerboard (default: pattern for badnets, sticker "
        "for label-consistent).",
        rich_help_panel=TRIGGER,
    ),
    size: int | None = typer.Option(
        None,
        help="Side of a square/sticker (default: 4 and 3); pattern and checkerboard are 3×3.",
        rich_help_panel=TRIGGER,
    ),
    color: str | None = typer.Option(
        None,
        help="R,G,B (0..255), #rrggbb, white or yellow-green (default: white for a square, "
        "yellow-green for a sticker).",
        rich_help_panel=TRIGGER,
    ),
    gray: int | None = typer.Option(
        None,
        help="Gray value on 1-channel images (default: the colour's luminance).",
        rich_help_panel=TRIGGER,
    ),
    position: str | None = typer.Option(
        None,
        help="bottom-right, bottom-left, top-right, top-left or random (default: random for a "
        "sticker, else bottom-right).",
        rich_help_panel=TRIGGER,
    ),
    offset: int | None = typer.Option(
        None,
        help="Gap in px to the corner's edges (default: 1; 0 for checkerboard, Turner's).",
        rich_help_panel=TRIGGER,
    ),
    window: str | None = typer.Option(
        None,
        help="Centred window for random positions, ROWSxCOLS (default: 10x15).",
        rich_help_panel=TRIGGER,
    ),
    amplitude: int | None = typer.Option(
        None,
        help="Checkerboard amplitude 1..255 (default: 255, full amplitude).",
        rich_help_panel=TRIGGER,
    ),
    eps: float | None = typer.Option(
        None, help="L∞ radius on the [0, 1] scale (default: 0.075).", rich_help_panel=PGD
    ),
    steps: int | None = typer.Option(None, help="PGD steps (default: 5).", rich_help_panel=PGD),
    step_size: float | None = typer.Option(
        None, help="PGD step size (default: 0.015).", rich_help_panel=PGD
    ),
    surrogate_epochs: int | None = typer.Option(
        None,
        help="Epochs of a surrogate trained here (default: the recipe's).",
        rich_help_panel=PGD,
    ),
    num_targets: int | None = typer.Option(
        None,
        "--targets",
        help="Targets, drawn from the test part (default: 1).",
        rich_help_panel=COLLISION,
    ),
    bases_per_target: int | None = typer.Option(
        None, help="Poisons per target (default: 1, the one-shot kill).", rich_help_panel=COLLISION
    ),
    beta0: float | None = typer.Option(
        None,
        help="β0 before the (2048/D_in)² scaling, on the [-1, 1] pixel scale (default: the "
        "0.0083 of Yaseen et al. 2020 for 28×28; 8×8 digits need about 6e-5). --param beta_scaling=none "
        "--param pixel_scale=1 gives β per [0, 1] unit instead.",
        rich_help_panel=COLLISION,
    ),
    max_iter: int | None = typer.Option(
        None,
        "--max-iters",
        help="Iterations per poison (default: 1000).",
        rich_help_panel=COLLISION,
    ),
    watermark: float | None = typer.Option(
        None,
        help="Opacity γ of the target blended into each base (0..1; default: 0, none; paper: up "
        "to 0.3).",
        rich_help_panel=COLLISION,
    ),
    layer: str | None = typer.Option(
        None,
        help="Feature layer by module name (default: body, the penultimate layer).",
        rich_help_panel=COLLISION,
    ),
    param: list[str] | None = typer.Option(
        None,
        "--param",
        "-p",
        metavar="<key=value>",
        help="Any attack parameter as key=value (repeatable).",
    ),
    no_eval: bool = typer.Option(
        False, "--no-eval", help="Only poison; train no victim.", rich_help_panel=EVAL
    ),
    victim_epochs: int | None = typer.Option(
        None,
        help="Epochs of the victim model (default: the architecture's recipe, raised to at "
        "least 1,500 training steps, at most 100 epochs, on small data).",
        rich_help_panel=EVAL,
    ),
    baseline: bool = typer.Option(
        False, "--baseline", help="Also train a clean model for comparison.", rich_help_panel=EVAL
    ),
    protocol: str = typer.Option(
        "transfer",
        help="feature-collision: transfer (retrain the last layer, 100 epochs) or end-to-end "
        "(fine-tune every weight, 10 epochs); --victim-epochs overrides the epochs.",
        rich_help_panel=EVAL,
    ),
    limit: int | None = LIMIT,
    image_size: str | None = IMAGE_SIZE,
    seed: int = SEED,
    device: str = DEVICE,
    threads: int | None = THREADS,
    force: bool = FORCE,
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
) -> None:
    """Poison a training set; write DIR/poisoned.npz and DIR/attack.json, then measure the attack.

    The data is split from --seed as in `poisonlab train`. The training part is poisoned, and a victim model is trained on it to report clean accuracy, ASR and MASR on the test part (feature collision: the success rate with its 95% interval; skip with --no-eval); on small data the victim trains at least 1,500 steps, so that it learns what the poisons teach. poisoned.npz holds x, y, ids, is_poison, original_label, source_index, source_id, attack and params, and the triggered test set (test_x, test_y) or the targets (target_x, target_y, target_labels); it loads with --data DIR/poisoned.npz (in Python: PoisonedDataset.load). The models trained here are kept as checkpoint folders, usable as --model: DIR/victim/ (trained on poisoned.npz, so `poisonlab scan DIR/poisoned.npz --model DIR/victim` reuses it instead of training one), DIR/baseline/ with --baseline, and DIR/model/ when feature-collision trains the model it attacks.

    Budgets: --rate is a fraction of the poisoned training set (as Subedar et al. 2019, arXiv:1912.01206), --target-rate a fraction of the target class (as Schulth et al. 2022, arXiv:2204.12848), --count an exact number; a budget the data cannot meet is an error. Triggers: pattern (MNIST 4 pixels), square (4×4 white), sticker (3×3 yellow-green, random in a centred 10x15 window), checkerboard (Turner's 3×3, --amplitude for reduced strength).

    Examples:

        poisonlab attack badnets --data fashion-mnist --out runs/bn

        poisonlab attack badnets --source 1 --target 7 --target-rate 0.2 \\
            --trigger square --size 2 --out runs/b17

        poisonlab attack label-consistent --data fashion-mnist --target 0 \\
            --trigger checkerboard --amplitude 64 --out runs/lc

        poisonlab attack badnets --param mode=replace --no-eval --out runs/quick

        poisonlab attack feature-collision --model runs/cnn --targets 20 \\
            --beta0 6e-5 --out runs/fc
    """
    configure(quiet=quiet, verbose=verbose)
    check_threads(threads)
    check_device(device)
    check_limit(limit)
    resize = parse_image_size(image_size)  # not `size`: that is the trigger's (ATTACK_OPTIONS)
    # 0 once meant the protocol's default for feature-collision (epochs or 100): refused here
    check_epochs("--victim-epochs", victim_epochs)
    catalog.check_names("attack", [name], catalog.ATTACKS)
    if protocol not in catalog.PROTOCOLS:
        raise ConfigError(f"--protocol {protocol!r} is not one of {', '.join(catalog.PROTOCOLS)}")
    if arch is not None:
        catalog.check_names("model", [arch], catalog.MODELS)
    options = {**locals(), "color": parse_color(color), "window": parse_window(window)}
    given = {k: options[k] for k in ATTACK_OPTIONS if options[k] is not None}
    given |= parse_params(param)
    check_output_apart(out_dir, input_paths([data], model))
    check_output_dir(out_dir, force=force, owned=ATTACK_FILES)
    # every cheap check passed: now the libraries (torch loads here, with the thread policy set)
    from poisonlab.attacks import ATTACKS, build_attack
    from poisonlab.attacks.badnets import BackdoorAttack
    from poisonlab.device import pick_device
    from poisonlab.workflows.attack_run import RunSettings, run_attack

    kwargs = attack_kwargs(name, given)
    resize_option = loader_options(data, resize, what="--data")  # before any model is loaded

    dev = pick_device(device)
    accepted = inspect.signature(ATTACKS.get(name).__init__).parameters
    if "device" in accepted:
        kwargs.setdefault("device", str(dev))
    network = None
    if model is not None:
        from poisonlab.models import load_checkpoint

        network = load_checkpoint(model, device=dev).model
    victim_arch = arch or (network.config.arch if network is not None else "cnn-small")
    if "surrogate_arch" in accepted:
        kwargs.setdefault("surrogate_arch", victim_arch)
    with options_as_typed():
        attack = build_attack(name, **kwargs)
    use_threads(threads, image_shape=_image_shape(network, data, resize))
    with options_as_typed(), output_folder(out_dir, force=force, owned=ATTACK_FILES) as folder:
        run = RunSettings(
            data,
            limit,
            model,
            network,
            victim_arch,
            victim_epochs,
            baseline,
            not no_eval,
            seed,
            dev,
            folder.work,
            protocol,
            resize_option.get("size"),
        )
        poisoned, metrics = run_attack(attack, run)
    if metrics:
        out.print(_summary_table(name, poisoned, metrics))
        counts = json.loads((out_dir / "attack.json").read_text())["counts"]
        shrunk = " (--limit shrank it in proportion to the training part)" if limit else ""
        out.print(f"measured on {counts['test']} test images{shrunk}", highlight=False)
        if isinstance(attack, BackdoorAttack):
            warn_low_asr(metrics, dict(poisoned.params))
        elif name == "feature-collision":
            warn_no_collision(metrics, dict(poisoned.params))
    else:
        out.print(
            f"{name}: {counted(poisoned.n_poison, 'poison')} in {len(poisoned.dataset)} images"
        )
    out.print(f"saved to {out_dir}")


def warn_low_asr(metrics: dict[str, Any], params: dict[str, Any] | None = None) -> None:
    """A warning through the log, as every command warns (``WARNING`` off a terminal), when the
    victim learned the backdoor poorly: its ASR is below the 90% that Gu et al. 2017 (BadNets,
    arXiv:1708.06733) report, so a defense tested against these poisons would be tested against
    a half-learned backdoor. The trigger hint follows the attack's trigger: a reduced-amplitude
    checkerboard is made stronger, not replaced."""
    from poisonlab.workflows.demo_summary import MIN_ASR

    asr = metrics.get("victim", {}).get("asr")
    if asr is None or asr >= MIN_ASR:
        return
    params = params or {}
    amplitude = params.get("amplitude")
    if params.get("trigger") == "checkerboard" and amplitude is not None and amplitude < 255:
        stronger = f"a stronger trigger (--amplitude above {amplitude}, up to 255)"
    else:
        stronger = "a larger trigger (--trigger square --size 3)"
    log.warning(
        "the victim learned the backdoor poorly: ASR %.1f%% (below %.0f%%). Give the attack more "
        "to learn from: a larger --rate or --target-rate, more --victim-epochs, or %s.",
        100 * asr,
        100 * MIN_ASR,
        stronger,
    )


def warn_no_collision(metrics: dict[str, Any], params: dict[str, Any]) -> None:
    """A warning through the log when no victim misclassified a single target: with the default
    β0 (Yaseen et al.'s for 28×28 images) on the default 8×8 digits, the poisons stay too close
    to their bases to move anything, and the command otherwise reports 0% as a result."""
    from poisonlab.attacks.collision_craft import CollisionSettings

    rates = [
        m["success_rate"] for m in metrics.values() if isinstance(m, dict) and "success_rate" in m
    ]
    if not rates or any(rate["successes"] for rate in rates):
        return
    hint = "a larger --beta0 lets a poison move further from its base"
    if params.get("beta0") == CollisionSettings.beta0 and params.get("input_dim", 784) < 784:
        hint = (
            f"the default --beta0 {CollisionSettings.beta0} is Yaseen et al.'s for 28×28 images; "
            "smaller images such as the 8×8 digits need about --beta0 6e-5"
        )
    log.warning("no victim misclassified any of the %d targets: %s.", rates[0]["n"], hint)


def _image_shape(network: Any, data: str, resize: tuple[int, int] | None) -> tuple[int, ...] | None:
    """The image shape the attack works on, for the automatic thread count (None: unknown): the
    --model's input, else the --image-size (channels unknown until the data loads:
    :func:`poisonlab.runtime.expected_image_shape`), else a built-in source's shape."""
    if network is not None:
        return tuple(network.config.input_shape)
    return runtime.expected_image_shape(data, resize)
