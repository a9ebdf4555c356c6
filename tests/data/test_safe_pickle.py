"""The restricted unpickler: plain data and numeric arrays load, everything else is refused."""

from __future__ import annotations

import contextlib
import pickle
from pathlib import Path

import numpy as np
import pytest

from poisonlab.data.safe_pickle import UnsafePickleError, safe_load, safe_loads
from poisonlab.errors import DataError


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_plain_data_and_arrays_round_trip(protocol: int) -> None:
    data = {
        "u8": np.arange(12, dtype=np.uint8).reshape(3, 4),
        "big_endian": np.linspace(0, 1, 6).astype(">f4").reshape(2, 3),
        "fortran": np.asfortranarray(np.arange(6, dtype=np.int64).reshape(2, 3)),
        "bool": np.array([True, False]),
        "empty": np.zeros((0, 5), np.float64),
        "plain": [1, 2.5, "x", b"y", (None, True), {3}, frozenset({4}), bytearray(b"z")],
    }
    back = safe_loads(pickle.dumps(data, protocol=protocol))
    assert back["plain"] == data["plain"]
    for key in ("u8", "big_endian", "fortran", "bool", "empty"):
        assert back[key].dtype == data[key].dtype and back[key].flags.writeable
        np.testing.assert_array_equal(back[key], data[key])


def test_shared_array_stays_shared() -> None:
    array = np.arange(4, dtype=np.uint8)
    back = safe_loads(pickle.dumps([array, array, (array,)], protocol=2))
    assert back[0] is back[1] is back[2][0]


@pytest.mark.parametrize(
    "value",
    [
        np.array([1, "a"], dtype=object),  # object arrays carry arbitrary pickles
        np.zeros(2, dtype=[("a", "u1"), ("b", "f4")]),  # structured dtypes
        np.int64(3),  # numpy scalars use numpy._core.multiarray.scalar
        np.float32,  # a type, not data
    ],
)
def test_non_plain_numpy_is_refused(value: object) -> None:
    with pytest.raises(UnsafePickleError, match="refused"):
        safe_loads(pickle.dumps(value, protocol=2))


def test_malformed_array_state_is_an_error_not_a_crash() -> None:
    good = pickle.dumps(np.arange(8, dtype=np.uint8), protocol=2)
    bad = good.replace(b"\x08\x00\x00\x00", b"\x07\x00\x00\x00", 1)  # length field of the data
    assert bad != good
    with pytest.raises((UnsafePickleError, pickle.UnpicklingError, ValueError, EOFError)):
        safe_loads(bad)


def test_byte_count_must_match_shape() -> None:
    pickled = pickle.dumps(np.zeros((2, 3), np.uint8), protocol=2)
    tampered = pickled.replace(b"K\x03", b"K\x04", 1)  # shape (2, 3) -> (2, 4)
    with pytest.raises(UnsafePickleError, match=r"6 bytes, shape .* needs 8"):
        safe_loads(tampered)


def test_codecs_encode_only_for_latin1() -> None:
    def call(encoding: str) -> bytes:
        enc = encoding.encode()
        return (
            b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX"
            + len(enc).to_bytes(4, "little")
            + enc
            + b"\x86R."
        )

    assert safe_loads(call("latin1")) == b"abc"
    with pytest.raises(UnsafePickleError, match=r"refused _codecs.encode"):
        safe_loads(call("rot13"))


def test_persistent_ids_are_refused() -> None:
    with pytest.raises(UnsafePickleError, match="persistent id"):
        safe_loads(b"\x80\x02X\x01\x00\x00\x00xQ.")


def test_safe_load_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "batch"
    path.write_bytes(b"\x80\x02}q\x00(X\x01")
    with pytest.raises(DataError, match=r"batch: corrupt or truncated pickle"):
        safe_load(path)
    with pytest.raises(DataError, match=r"missing: cannot read"):
        safe_load(tmp_path / "missing")


@pytest.mark.parametrize("protocol", [2, 5])
def test_mutated_batches_fail_cleanly(tmp_path: Path, protocol: int) -> None:
    """Random byte flips (which crash NumPy's own unpickling) only ever give DataError."""
    batch = {b"data": np.arange(40, dtype=np.uint8).reshape(2, 20), b"labels": [1, 2]}
    original = pickle.dumps(batch, protocol=protocol)
    rng = np.random.default_rng(protocol)
    path = tmp_path / "batch"
    for _ in range(200):
        mutated = bytearray(original)
        for position in rng.integers(0, len(mutated), size=2):
            mutated[position] = int(rng.integers(0, 256))
        path.write_bytes(bytes(mutated))
        with contextlib.suppress(DataError):
            safe_load(path)
