"""Parameter validation shared by every attack, detector, threshold and experiment config.

The shape follows scikit-learn's parameter validation (``Interval``, ``StrOptions`` and a class's
``_parameter_constraints``), written for poisonlab: each class declares, per keyword, the list of
constraints a value may satisfy (``None`` in the list means None is allowed), and its constructor
calls :func:`validate_params` once. A value that satisfies no constraint raises
:class:`ParameterError`, a :class:`~poisonlab.errors.ConfigError` whose one-line message names the
owner, the parameter, the value and everything that would have been accepted::

    spectral-signatures eps must be a number in (0, 1), got 'abc'
    deep-features seed must be an integer, got 1.5

Why these rules (the library used to have five idioms that disagreed):

- **bool is not a number.** ``True == 1`` in Python, so ``eps=True`` silently became 1.0; a flag
  where a number belongs is a mistake in a config or a call, and it is refused.
- **floats are not integers.** ``seed=1.5`` silently became 1, and ``epochs = 3.0`` in a TOML file
  is as likely a typo as not; an integer parameter takes integers only (NumPy integers included).
- **strings are not numbers.** ``seed="3"`` is refused, not parsed: the CLI and TOML already give
  numbers for numbers, so a string there means the user wrote something else (``--param
  eps=abc``).
- **NaN and ±inf are refused** for every number: a NaN threshold flags nothing and an infinite
  rate has no meaning; nothing in poisonlab needs an infinite hyper-parameter.
- **a valid value is normalised once**: real numbers become ``float``, integers ``int`` (so
  parameters are JSON-ready), sequences become tuples of normalised items.

Cross-parameter rules (``source`` needs ``target``, ``base_class != target_class``...) stay in the
constructors after :func:`validate_params`; they are relations, not constraints on one value.
"""

from __future__ import annotations

import functools
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from poisonlab.errors import ConfigError

__all__ = [
    "CLASSES",
    "CLASS_INDEX",
    "FRACTION",
    "LAYER",
    "NON_NEGATIVE",
    "NON_NEGATIVE_INT",
    "POSITIVE",
    "POSITIVE_INT",
    "SEED",
    "Boolean",
    "Constraint",
    "InstanceOf",
    "Interval",
    "Items",
    "Options",
    "ParameterError",
    "Text",
    "Validated",
    "check_keywords",
    "check_param",
    "describe_constraints",
    "short_repr",
    "validate_params",
]

Closed = Literal["both", "left", "right", "neither"]
_MAX_REPR = 80


_KEYWORD = re.compile(r"`([a-z_]+)(?:=([^`]*))?`")
"""A keyword as library messages name it: ```offset```, or ```window=(10, 15)``` with its value
as Python writes it."""


def reword_keywords(message: str, spell: Callable[[str, str | None], str | None]) -> str:
    """``message`` with each keyword it names in backticks replaced by ``spell(key, value)``,
    how a front end (the command line, a config file) writes it; None keeps the original."""

    def one(match: re.Match[str]) -> str:
        spelled = spell(match.group(1), match.group(2))
        return match.group(0) if spelled is None else spelled

    return _KEYWORD.sub(one, message)


def short_repr(value: Any) -> str:
    """``repr(value)``, cut to one short line (a long list or a tensor stays readable)."""
    text = " ".join(repr(value).split())
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 1] + "…"


class ParameterError(ConfigError):
    """A parameter value satisfies none of its constraints.

    Attributes
    ----------
    owner : str
        Who takes the parameter (``spectral-signatures``, ``[data]``, ``trigger``...).
    param : str
        The keyword.
    value : object
        The value given.
    expected : str
        What would have been accepted (``a number in (0, 1) or None``).
    wants_list : bool
        Whether one of the alternatives is a list (:attr:`Constraint.takes_list`): a config can
        then hint that a flat list was read as a grid axis.
    """

    def __init__(
        self, owner: str, param: str, value: Any, expected: str, *, wants_list: bool = False
    ) -> None:
        prefix = f"{owner} " if owner else ""
        super().__init__(f"{prefix}{param} must be {expected}, got {short_repr(value)}")
        self.owner = owner
        self.param = param
        self.value = value
        self.expected = expected
        self.wants_list = wants_list

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled (a worker process of the user's) and copied as its fields: an exception's
        default, its message as the one argument, fails with a TypeError on load."""
        rebuild = functools.partial(ParameterError, wants_list=self.wants_list)
        return rebuild, (self.owner, self.param, self.value, self.expected)


class Constraint(ABC):
    """One kind of value a parameter accepts."""

    takes_list: ClassVar[bool] = False
    """Whether a list is one of the values accepted: a config can then hint that a flat list
    was read as a grid axis (:attr:`ParameterError.wants_list`)."""

    @abstractmethod
    def accepts(self, value: Any) -> bool:
        """Whether ``value`` satisfies the constraint."""

    @abstractmethod
    def describe(self) -> str:
        """What is accepted, as a noun phrase (``an integer >= 1``)."""

    def convert(self, value: Any) -> Any:
        """The normalised form of an accepted value (the value itself by default)."""
        return value

    def __str__(self) -> str:
        return self.describe()


def _is_integer(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _number(value: float) -> str:
    """``0.5``, ``1``, ``1e-06``: bounds as a reader writes them."""
    return f"{value:g}" if isinstance(value, float) else str(value)


class Interval(Constraint):
    """A finite integer or real number between optional bounds.

    Parameters
    ----------
    kind : ``numbers.Integral`` or ``numbers.Real``
        Integers only (bools and floats refused), or any finite real number (bools refused;
        integers accepted and converted to float).
    low, high : number or None
        Bounds; None leaves that side open (unbounded).
    closed : {"both", "left", "right", "neither"}
        Which bounds belong to the interval.
    what : str or None
        A description for messages instead of the generated one (``a class index >= 0``).
    """

    def __init__(
        self,
        kind: type[Integral] | type[Real],
        low: float | None,
        high: float | None,
        *,
        closed: Closed = "both",
        what: str | None = None,
    ) -> None:
        if kind not in (Integral, Real):
            raise TypeError(f"Interval kind must be numbers.Integral or numbers.Real, got {kind}")
        if closed not in ("both", "left", "right", "neither"):
            raise ValueError(f"closed must be both, left, right or neither, got {closed!r}")
        if low is not None and high is not None and low > high:
            raise ValueError(f"empty interval: low {low} > high {high}")
        self.kind = kind
        self.low = low
        self.high = high
        self.closed = closed
        self.what = what

    def accepts(self, value: Any) -> bool:
        """A number of the right kind, finite, inside the bounds."""
        if self.kind is Integral:
            if not _is_integer(value):
                return False
        elif not _is_real(value) or not math.isfinite(float(value)):
            return False
        left_closed = self.closed in ("both", "left")
        right_closed = self.closed in ("both", "right")
        if self.low is not None and (value < self.low or (value == self.low and not left_closed)):
            return False
        return not (
            self.high is not None
            and (value > self.high or (value == self.high and not right_closed))
        )

    def convert(self, value: Any) -> Any:
        """``int`` for integer intervals, ``float`` for real ones."""
        return int(value) if self.kind is Integral else float(value)

    def describe(self) -> str:
        """``an integer >= 1``, ``a number in (0, 1)``, ``a finite number``..."""
        if self.what is not None:
            return self.what
        noun = "an integer" if self.kind is Integral else "a number"
        low, high = self.low, self.high
        if low is None and high is None:
            return noun if self.kind is Integral else "a finite number"
        if high is None:
            sign = ">=" if self.closed in ("both", "left") else ">"
            return f"{noun} {sign} {_number(low)}"  # type: ignore[arg-type]
        if low is None:
            sign = "<=" if self.closed in ("both", "right") else "<"
            return f"{noun} {sign} {_number(high)}"
        left = "[" if self.closed in ("both", "left") else "("
        right = "]" if self.closed in ("both", "right") else ")"
        return f"{noun} in {left}{_number(low)}, {_number(high)}{right}"


class Options(Constraint):
    """One of a fixed set of strings (scikit-learn's ``StrOptions``); the order is kept for messages."""

    def __init__(self, options: Iterable[str]) -> None:
        self.options = tuple(options)
        if not self.options or not all(isinstance(o, str) for o in self.options):
            raise TypeError("Options needs at least one string option")

    def accepts(self, value: Any) -> bool:
        """A string equal to one of the options."""
        return isinstance(value, str) and value in self.options

    def describe(self) -> str:
        """``one of 'pca', 'fastica', 'none'``."""
        if len(self.options) == 1:
            return repr(self.options[0])
        return "one of " + ", ".join(repr(o) for o in self.options)


class Text(Constraint):
    """A non-empty string without surrounding whitespace (a layer name, an architecture)."""

    def __init__(self, what: str = "a non-empty string") -> None:
        self.what = what

    def accepts(self, value: Any) -> bool:
        """A non-empty, stripped string."""
        return isinstance(value, str) and bool(value) and value == value.strip()

    def describe(self) -> str:
        """The description given at construction."""
        return self.what


class Boolean(Constraint):
    """``True`` or ``False``: not 0/1, not ``"true"``."""

    def accepts(self, value: Any) -> bool:
        """A Python bool."""
        return isinstance(value, bool)

    def describe(self) -> str:
        """``true or false``."""
        return "true or false"


class InstanceOf(Constraint):
    """An instance of a class (a :class:`~poisonlab.defenses.thresholds.Threshold`...)."""

    def __init__(self, cls: type, what: str | None = None) -> None:
        self.cls = cls
        self.what = what or f"a {cls.__name__}"

    def accepts(self, value: Any) -> bool:
        """``isinstance(value, cls)``."""
        return isinstance(value, self.cls)

    def describe(self) -> str:
        """The description given at construction."""
        return self.what


class Items(Constraint):
    """A list or tuple whose every item satisfies ``item``; converted to a tuple.

    Parameters
    ----------
    item : Constraint
        What each element must be.
    length : int or None
        Exact number of items (an RGB colour: 3); None for any length >= ``min_length``.
    min_length : int
        Fewest items when ``length`` is None.
    unique : bool
        Refuse repeated items (a list of classes).
    what : str or None
        A description for messages instead of the generated one.
    """

    takes_list = True

    def __init__(
        self,
        item: Constraint,
        *,
        length: int | None = None,
        min_length: int = 1,
        unique: bool = False,
        what: str | None = None,
    ) -> None:
        self.item = item
        self.length = length
        self.min_length = min_length
        self.unique = unique
        self.what = what

    def accepts(self, value: Any) -> bool:
        """A list/tuple of the right length whose items all satisfy ``item``."""
        if not isinstance(value, (list, tuple)):
            return False
        if self.length is not None and len(value) != self.length:
            return False
        if len(value) < self.min_length or not all(self.item.accepts(v) for v in value):
            return False
        return not self.unique or len(set(value)) == len(value)

    def convert(self, value: Any) -> tuple[Any, ...]:
        """A tuple of converted items."""
        return tuple(self.item.convert(v) for v in value)

    def describe(self) -> str:
        """``a list of 3 values, each an integer in [0, 255]``."""
        if self.what is not None:
            return self.what
        if self.length is not None:
            count = f"{self.length} values"
        elif self.min_length > 1:
            count = f"at least {self.min_length} values"
        else:
            count = "values"
        distinct = " distinct" if self.unique else ""
        return f"a list of{distinct} {count}, each {self.item.describe()}"


MAX_IMAGE_SIDE = 1024
"""Largest side of an image size a user asks for (``--image-size``, ``[data] image_size``): a
typo such as 3232 for 32x32 would otherwise allocate every image at ten million pixels before
anything could fail."""


class ImageSize(Constraint):
    """An image size, converted to (height, width): ``"32x24"`` or ``"32"`` text (the command
    line's ``--image-size``), one integer (a square) or [height, width]; each side a whole number
    of pixels from 1 to :data:`MAX_IMAGE_SIDE`. The command line and experiment configs read sizes
    through this one constraint, so they accept the same ones."""

    takes_list = True
    _TEXT = re.compile(r"\s*(\d+)\s*(?:[xX×]\s*(\d+)\s*)?")

    def _sides(self, value: Any) -> tuple[int, int] | None:
        sides: tuple[Any, ...] = ()
        if isinstance(value, str):
            match = self._TEXT.fullmatch(value)
            sides = (int(match[1]), int(match[2] or match[1])) if match else ()
        elif _is_integer(value):
            sides = (value, value)
        elif isinstance(value, (list, tuple)) and len(value) == 2:
            sides = tuple(value)
        side = Interval(Integral, 1, MAX_IMAGE_SIDE)
        if len(sides) != 2 or not all(side.accepts(v) for v in sides):
            return None
        return int(sides[0]), int(sides[1])

    def accepts(self, value: Any) -> bool:
        """Text, an integer or a pair whose sides are whole numbers in [1, MAX_IMAGE_SIDE]."""
        return self._sides(value) is not None

    def convert(self, value: Any) -> tuple[int, int]:
        """(height, width)."""
        sides = self._sides(value)
        assert sides is not None, "convert() follows accepts()"
        return sides

    def describe(self) -> str:
        """What is accepted, in a config's terms."""
        return (
            f"[HEIGHT, WIDTH], HEIGHTxWIDTH text or one integer (a square), each side in whole "
            f"pixels from 1 to {MAX_IMAGE_SIDE}"
        )


ConstraintList = Sequence[Constraint | None]

# Constraints many classes share.
FRACTION = Interval(Real, 0, 1, closed="neither")
"""A number strictly between 0 and 1 (rates, false-positive rates, fractions)."""
POSITIVE = Interval(Real, 0, None, closed="neither")
"""A finite number > 0 (learning rates, regularisers, step sizes)."""
NON_NEGATIVE = Interval(Real, 0, None)
"""A finite number >= 0 (weights that may switch a term off)."""
POSITIVE_INT = Interval(Integral, 1, None)
"""An integer >= 1 (counts, batch sizes, iterations)."""
NON_NEGATIVE_INT = Interval(Integral, 0, None)
"""An integer >= 0 (counts where 0 means none)."""
SEED = Interval(Integral, None, None)
"""Any integer (seeds are hashed by :func:`poisonlab.seeding.derive_seed` or given to torch)."""
CLASS_INDEX = Interval(Integral, 0, None, what="a class index (an integer >= 0)")
"""A class index; whether it exists is checked against the data later."""
CLASSES = Items(CLASS_INDEX, unique=True, what="a list of distinct class indices (integers >= 0)")
"""A non-empty list of distinct class indices."""
LAYER = Text("a layer name")
"""A module name of the model (``dict(model.named_modules())``)."""
IMAGE_SIZE = ImageSize()
"""An image size (:class:`ImageSize`) as (height, width)."""


def describe_constraints(constraints: ConstraintList) -> str:
    """Every alternative joined with ``or``, None last: ``a number in (0, 1) or None``."""
    parts = [c.describe() for c in constraints if c is not None]
    parts += ["None"] * (None in constraints)
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]


def check_param(owner: str, name: str, value: Any, constraints: ConstraintList) -> Any:
    """``value`` normalised by the first constraint it satisfies; ParameterError otherwise.

    Parameters
    ----------
    owner : str
        Named first in the message (a registry name such as ``bnn``, or ``[data]``).
    name : str
        The parameter.
    value : object
    constraints : sequence of Constraint or None
        Alternatives; ``None`` accepts None.
    """
    for constraint in constraints:
        if constraint is None:
            if value is None:
                return None
        elif constraint.accepts(value):
            return constraint.convert(value)
    wants_list = any(c is not None and c.takes_list for c in constraints)
    raise ParameterError(
        owner, name, value, describe_constraints(constraints), wants_list=wants_list
    )


def validate_params(
    owner: str, constraints: Mapping[str, ConstraintList], values: Mapping[str, Any]
) -> dict[str, Any]:
    """Check every ``values[name]`` against ``constraints[name]``; return the normalised values.

    A name without declared constraints is a programming error (TypeError), so a new keyword
    cannot slip in unvalidated.
    """
    missing = sorted(set(values) - set(constraints))
    if missing:
        raise TypeError(f"{owner}: no constraints declared for {', '.join(missing)}")
    return {
        name: check_param(owner, name, value, constraints[name]) for name, value in values.items()
    }


def check_keywords(owner: str, factory: Any, params: Mapping[str, Any]) -> None:
    """ConfigError naming the first keyword of ``params`` that ``factory`` does not take.

    Only keyword-only and positional-or-keyword parameters count; a factory with ``**kwargs``
    takes anything.
    """
    import inspect

    accepted: set[str] = set()
    for p in inspect.signature(factory).parameters.values():
        if p.kind is p.VAR_KEYWORD:
            return
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self":
            accepted.add(p.name)
    wrong = sorted(set(params) - accepted)
    if wrong:
        raise ConfigError(
            f"{owner} does not take {wrong[0]!r}; it takes: {', '.join(sorted(accepted))}"
        )


class Validated:
    """Mixin: a class that declares ``_parameter_constraints`` and sets validated attributes.

    Subclasses extend the parent's declaration (``{**Parent._parameter_constraints, ...}``) and call
    :meth:`_set_params` in ``__init__``; ``_owner`` names them in messages (the registry name).
    """

    _parameter_constraints: ClassVar[dict[str, ConstraintList]] = {}

    if TYPE_CHECKING:
        # The hyper-parameters are set by _set_params from the declaration, which a type checker
        # cannot follow; each is checked at run time against its constraints instead.
        def __getattr__(self, name: str) -> Any: ...

    def _owner(self) -> str:
        return str(getattr(self, "name", type(self).__name__))

    def __repr__(self) -> str:
        """The class and its hyper-parameters, e.g. ``BadNets(rate=0.2, ...)``: what a notebook
        or a log shows of an attack or a detector (its ``params()`` when it has them)."""
        params = getattr(self, "params", None)
        values = (
            params()
            if callable(params)
            else {k: v for k, v in vars(self).items() if not k.startswith("_")}
        )
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in values.items())})"

    def _set_params(self, **values: Any) -> None:
        """Validate ``values`` against ``_parameter_constraints`` and store them as attributes."""
        checked = validate_params(self._owner(), self._parameter_constraints, values)
        for name, value in checked.items():
            setattr(self, name, value)
