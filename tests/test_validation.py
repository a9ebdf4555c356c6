"""The one validator: its rules, and every registered attack and detector going through it."""

from __future__ import annotations

import copy
import inspect
import math
import pickle
from numbers import Integral, Real
from typing import Any

import numpy as np
import pytest

from poisonlab.attacks import ATTACKS, attack_names
from poisonlab.defenses import DETECTORS, build_detector, detector_names
from poisonlab.errors import ConfigError
from poisonlab.validation import (
    CLASSES,
    Boolean,
    Interval,
    Items,
    Options,
    ParameterError,
    Text,
    check_param,
    describe_constraints,
    validate_params,
)

# -- the rules -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("constraint", "good", "bad"),
    [
        (Interval(Integral, 1, None), [1, 7, np.int64(3)], [0, True, 1.5, 3.0, "3", None]),
        (
            Interval(Real, 0, 1, closed="neither"),
            [0.5, np.float32(0.25), 1e-9],
            [0, 1, 0.0, True, False, "0.5", math.nan, math.inf, None],
        ),
        (Interval(Real, 0, 1, closed="left"), [0, 0.0, 0.999], [1, 1.0, -1e-12]),
        (Interval(Real, None, None), [-1e300, 0, 3], [math.nan, math.inf, -math.inf, "1"]),
        (Options(("a", "b")), ["a", "b"], ["c", "A", 1, None]),
        (Text("a layer name"), ["body", "fc.1"], ["", " body", 3, None]),
        (Boolean(), [True, False], [0, 1, "true", None]),
        (CLASSES, [[0], (3, 1), [np.int64(2)]], [[], [1, 1], [-1], [1.0], "3", 3, [True]]),
        (Items(Interval(Integral, 0, 255), length=3), [(1, 2, 3)], [(1, 2), (1, 2, 256)]),
    ],
)
def test_constraints_accept_and_refuse(constraint, good, bad) -> None:
    for value in good:
        assert constraint.accepts(value), value
    for value in bad:
        assert not constraint.accepts(value), value


def test_values_are_normalised() -> None:
    assert check_param("x", "n", np.int64(3), [Interval(Integral, 0, None)]) == 3
    assert type(check_param("x", "n", np.int64(3), [Interval(Integral, 0, None)])) is int
    assert type(check_param("x", "f", 1, [Interval(Real, 0, None)])) is float
    assert check_param("x", "c", [2, 0], [None, CLASSES]) == (2, 0)
    assert check_param("x", "c", None, [None, CLASSES]) is None


@pytest.mark.parametrize(
    ("constraint", "text"),
    [
        (Interval(Integral, 1, None), "an integer >= 1"),
        (Interval(Integral, 0, 10_000), "an integer in [0, 10000]"),
        (Interval(Real, 0, 1, closed="neither"), "a number in (0, 1)"),
        (Interval(Real, 0, 0.5, closed="right"), "a number in (0, 0.5]"),
        (Interval(Real, 0, None, closed="neither"), "a number > 0"),
        (Interval(Real, None, 1), "a number <= 1"),
        (Interval(Real, None, None), "a finite number"),
        (Options(("pca", "none")), "one of 'pca', 'none'"),
    ],
)
def test_descriptions_give_the_range(constraint, text) -> None:
    assert constraint.describe() == text


def test_message_names_owner_parameter_value_and_every_alternative() -> None:
    with pytest.raises(ParameterError) as info:
        check_param("bnn", "lr", "fast", [None, Interval(Real, 0, None, closed="neither")])
    error = info.value
    assert str(error) == "bnn lr must be a number > 0 or None, got 'fast'"
    assert isinstance(error, ConfigError)
    assert (error.owner, error.param, error.value) == ("bnn", "lr", "fast")
    assert describe_constraints([None, Boolean()]) == "true or false or None"


def test_a_parameter_error_survives_pickling_and_copying() -> None:
    """A user's worker process sends it pickled; the default (message as one argument) failed."""
    error = ParameterError("badnets", "window", (10, 15), "at most 8×8", wants_list=True)
    for copied in (pickle.loads(pickle.dumps(error)), copy.copy(error)):
        assert type(copied) is ParameterError and str(copied) == str(error)
        fields = (copied.owner, copied.param, copied.value, copied.expected, copied.wants_list)
        assert fields == ("badnets", "window", (10, 15), "at most 8×8", True)


def test_long_values_are_cut_to_one_line() -> None:
    with pytest.raises(ParameterError) as info:
        check_param("x", "y", list(range(1000)), [Boolean()])
    message = str(info.value)
    assert "\n" not in message and len(message) < 200 and message.endswith("…")


def test_undeclared_parameter_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match="no constraints declared for typo"):
        validate_params("x", {"a": [Boolean()]}, {"a": True, "typo": 1})


# -- every registered class declares and uses its constraints -----------------------------


def _keywords(cls: type, skip: tuple[str, ...] = ()) -> set[str]:
    params = inspect.signature(cls.__init__).parameters.values()
    return {p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in skip}


def _classes() -> list[Any]:
    attack_names()  # fills ATTACKS
    found = [
        pytest.param("detector", name, DETECTORS.get(name), id=name) for name in detector_names()
    ]
    found += [pytest.param("attack", name, ATTACKS.get(name), id=name) for name in attack_names()]
    return found


def _build(role: str, name: str, **params: Any) -> Any:
    if role == "detector":
        return build_detector(name, **params)
    return ATTACKS.get(name)(**params)


@pytest.mark.parametrize(("role", "name", "cls"), _classes())
def test_every_keyword_has_declared_constraints(role: str, name: str, cls: type) -> None:
    skip = ("threshold", "classes") if role == "detector" else ()
    assert set(cls._parameter_constraints) == _keywords(cls, skip)


BAD_CANDIDATES = (True, False, "3", "abc", 1.5, math.nan, math.inf, -math.inf, -1, 10**9, [1])


@pytest.mark.parametrize(("role", "name", "cls"), _classes())
def test_every_bad_value_is_one_line_naming_parameter_and_value(
    role: str, name: str, cls: type
) -> None:
    """bools are not numbers, floats are not integers, strings are not numbers, no NaN/inf."""
    checked = 0
    for param, constraints in cls._parameter_constraints.items():
        for value in BAD_CANDIDATES:
            accepted = any(c is not None and c.accepts(value) for c in constraints)
            if accepted:
                continue
            with pytest.raises(ParameterError) as info:
                _build(role, name, **{param: value})
            message = str(info.value)
            assert info.value.param == param, message
            assert f"{param} must be" in message and repr(value) in message
            assert "\n" not in message
            checked += 1
    assert checked > 0


@pytest.mark.parametrize(("role", "name", "cls"), _classes())
def test_defaults_pass_their_own_constraints(role: str, name: str, cls: type) -> None:
    built = _build(role, name)
    params = built.params()
    for key, value in params.items():
        if key in cls._parameter_constraints:
            assert value is None or any(
                c is not None and c.accepts(value) for c in cls._parameter_constraints[key]
            ), (key, value)


# -- what the library issue reported ---------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"seed": 1.5}, "deep-features seed must be an integer, got 1.5"),
        ({"seed": "3"}, "deep-features seed must be an integer, got '3'"),
        ({"eps": True}, "deep-features eps must be a number > 0, got True"),
        ({"eps": math.nan}, "deep-features eps must be a number > 0, got nan"),
    ],
)
def test_deep_features_no_longer_coerces(params: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_detector("deep-features", **params)
    assert str(info.value) == fragment


@pytest.mark.parametrize(
    "name", ["bnn", "deep-features", "raw-clustering", "activation-clustering"]
)
def test_one_rule_for_seeds_everywhere(name: str) -> None:
    for seed in (1.5, "3", True):
        with pytest.raises(ConfigError, match=f"{name} seed must be an integer"):
            build_detector(name, seed=seed)
    assert build_detector(name, seed=np.int64(3)).seed == 3


def test_classes_are_class_indices() -> None:
    for bad in ([1.5], ["3"], [1, 1], [], [-1], 3):
        with pytest.raises(ConfigError, match="classes must be a list of distinct class indices"):
            build_detector("spectral-signatures", classes=bad)
    assert build_detector("spectral-signatures", classes=[np.int64(2), 0]).classes == (2, 0)


def test_an_attack_and_a_detector_show_their_hyper_parameters() -> None:
    """A notebook or a log shows the class and its settings, not ``<... object at 0x...>``."""
    from poisonlab.attacks import build_attack

    attack = repr(build_attack("badnets", rate=0.1))
    assert attack.startswith("BadNets(") and "rate=0.1" in attack and " at 0x" not in attack
    detector = repr(build_detector("spectral-signatures", threshold="contamination:0.1"))
    assert detector.startswith("SpectralSignatures(")
    assert "threshold='contamination:0.1'" in detector and "eps=0.1" in detector
