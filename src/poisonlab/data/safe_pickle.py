"""A pickle reader that builds only plain data, so a data file can never run code.

Plain pickles (dicts, lists, tuples, strings, bytes, numbers) need no global at all. The rest of
the allow-list is exactly what NumPy arrays and Python-3-written protocol-2 pickles reference:

- ``numpy.core.multiarray._reconstruct`` (NumPy 1) / ``numpy._core.multiarray._reconstruct``
  (NumPy 2), ``numpy.ndarray`` and ``numpy.dtype``: an array pickled with protocols 0-4;
- ``numpy._core.numeric._frombuffer`` (and its ``numpy.core`` name): protocol 5;
- ``set``, ``frozenset``, ``bytes``, ``bytearray``: what protocols below 4/5 write as calls
  (the last two only with the arguments pickle itself writes);
- ``_codecs.encode``: how protocol 2 from Python 3 writes bytes, accepted for latin-1 only.

Every other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``...) is refused before
anything is called, with an UnsafePickleError (an UnpicklingError) naming it.

The NumPy names are *not* mapped to NumPy's own pickle helpers: fed malformed state, those can
crash the interpreter (a fuzzed CIFAR batch segfaults ``ndarray.__setstate__``). They map to
small stand-ins here that accept only plain numeric dtypes (bool, int, uint, float, complex),
check that the byte count matches the shape, and build the array with ``np.frombuffer``.
"""

from __future__ import annotations

import io
import math
import pickle
import pickletools
import re
from pathlib import Path
from typing import Any

import numpy as np

from poisonlab.errors import DataError

_DTYPE_CODE = re.compile(r"b1|[iu][1248]|f[248]|c(8|16)")
_NDARRAY = object()  # what the global numpy.ndarray stands for: a marker, never callable


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle referenced something outside the allow-list, or malformed array state."""


def _text(value: Any, what: str) -> str:
    """``value`` as str (pickles from Python 2 hold bytes); anything else is refused."""
    if isinstance(value, bytes):
        return value.decode("latin1")
    if isinstance(value, str):
        return value
    raise UnsafePickleError(f"{what} must be a string, got {type(value).__name__}")


class _Dtype:
    """Stand-in for ``numpy.dtype(code, align, copy)`` + ``__setstate__`` of a plain numeric dtype."""

    def __init__(self, code: Any, align: Any = False, copy: Any = True) -> None:
        code = _text(code, "dtype code")
        if not _DTYPE_CODE.fullmatch(code):
            raise UnsafePickleError(f"refused dtype {code!r} (only plain numeric dtypes)")
        self.dtype = np.dtype(code)

    def __setstate__(self, state: Any) -> None:
        """Apply the byte order of a pickled dtype state; fields or sub-arrays are refused."""
        if not isinstance(state, tuple) or len(state) < 5 or any(s is not None for s in state[2:5]):
            raise UnsafePickleError("refused dtype state (structured or malformed)")
        order = _text(state[1], "byte order")
        if order not in ("<", ">", "|", "="):
            raise UnsafePickleError(f"refused byte order {order!r}")
        if order in "<>":
            self.dtype = self.dtype.newbyteorder(order)


def _array(raw: Any, dtype: Any, shape: Any, fortran: bool) -> np.ndarray:
    """A writable array from raw bytes, after checking dtype, shape and byte count."""
    if not isinstance(dtype, _Dtype):
        raise UnsafePickleError("array dtype is not a plain numeric dtype")
    if isinstance(shape, int):
        shape = (shape,)
    if not (isinstance(shape, tuple) and len(shape) <= 32):
        raise UnsafePickleError("array shape must be a tuple of at most 32 sizes")
    if not all(isinstance(s, int) and s >= 0 for s in shape):
        raise UnsafePickleError(f"array shape {shape!r} is not made of sizes >= 0")
    if isinstance(raw, str):
        raw = raw.encode("latin1")
    if not isinstance(raw, bytes | bytearray):
        raise UnsafePickleError(f"array data must be bytes, got {type(raw).__name__}")
    expected = math.prod(shape) * dtype.dtype.itemsize
    if len(raw) != expected:
        raise UnsafePickleError(f"array data has {len(raw)} bytes, shape {shape} needs {expected}")
    buffer = raw if isinstance(raw, bytearray) else bytearray(raw)
    return np.frombuffer(buffer, dtype=dtype.dtype).reshape(shape, order="F" if fortran else "C")


class _Array:
    """Stand-in for ``_reconstruct(ndarray, ...)``; ``__setstate__`` receives shape, dtype, data."""

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        """Build the array from ``(version, shape, dtype, is_fortran, rawdata)``."""
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]
        if not (isinstance(state, tuple) and len(state) == 4):
            raise UnsafePickleError("refused array state (malformed)")
        shape, dtype, fortran, raw = state
        self.array = _array(raw, dtype, shape, bool(fortran))


def _reconstruct(cls: Any, shape: Any, typecode: Any) -> _Array:
    """Stand-in for ``numpy.core.multiarray._reconstruct``: plain ndarrays only."""
    if cls is not _NDARRAY:
        raise UnsafePickleError("refused _reconstruct of anything but numpy.ndarray")
    return _Array()


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """Stand-in for ``numpy._core.numeric._frombuffer`` (protocol 5 arrays)."""
    return _array(buf, dtype, shape, _text(order, "order") == "F")


def _latin1_encode(text: Any, encoding: Any = "latin1") -> bytes:
    """``_codecs.encode`` restricted to latin-1, the only codec pickle itself uses for bytes."""
    name = _text(encoding, "encoding").lower().replace("-", "").replace("_", "")
    if name not in ("latin1", "iso88591") or not isinstance(text, str):
        raise UnsafePickleError(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _bytes(*args: Any) -> bytes:
    """``bytes()`` as protocols below 3 write b"" (only the forms pickle itself produces)."""
    return bytes(_bytearray(*args))


def _bytearray(*args: Any) -> bytearray:
    """``bytearray()``, ``bytearray(bytes)`` or ``bytearray(str, "latin-1")``, nothing else.

    Refusing ``bytearray(n)`` keeps a tiny pickle from allocating gigabytes of zeros.
    """
    if not args:
        return bytearray()
    if len(args) == 1 and isinstance(args[0], bytes | bytearray):
        return bytearray(args[0])
    if len(args) == 2 and isinstance(args[0], str):
        return bytearray(_latin1_encode(args[0], args[1]))
    raise UnsafePickleError("refused bytes/bytearray call (only bytes or latin-1 text)")


def _allowed() -> dict[tuple[str, str], Any]:
    """The (module, name) pairs a data pickle may reference, mapped to what they stand for."""
    allowed: dict[tuple[str, str], Any] = {
        ("_codecs", "encode"): _latin1_encode,
        ("numpy", "ndarray"): _NDARRAY,
        ("numpy", "dtype"): _Dtype,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = _reconstruct
        allowed[(f"{core}.numeric", "_frombuffer")] = _frombuffer
    for builtins in ("builtins", "__builtin__"):
        allowed[(builtins, "set")] = set
        allowed[(builtins, "frozenset")] = frozenset
        allowed[(builtins, "bytearray")] = _bytearray
        allowed[(builtins, "bytes")] = _bytes
    return allowed


_ALLOWED = _allowed()


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler whose ``find_class`` hands out only the allow-listed data constructors."""

    def find_class(self, module: str, name: str) -> Any:
        """The allow-listed object for ``module.name``; anything else raises UnsafePickleError."""
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"refused to load global {module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        """Persistent ids point outside the file; a data file has no business using them."""
        raise UnsafePickleError("refused a persistent id")


def _finish(obj: Any, seen: dict[int, Any]) -> Any:
    """Replace the array and dtype stand-ins by real arrays and dtypes, through all containers."""
    if isinstance(obj, _Array):
        if obj.array is None:
            raise UnsafePickleError("array without data")
        return obj.array
    if isinstance(obj, _Dtype):
        return obj.dtype
    if id(obj) in seen:
        return seen[id(obj)]
    if isinstance(obj, list):
        seen[id(obj)] = obj
        obj[:] = [_finish(v, seen) for v in obj]
    elif isinstance(obj, dict):
        seen[id(obj)] = obj
        if any(isinstance(k, _Array | _Dtype) for k in obj):
            raise UnsafePickleError("array used as a dict key")
        for key, value in obj.items():
            obj[key] = _finish(value, seen)
    elif isinstance(obj, tuple):
        obj = seen[id(obj)] = tuple(_finish(v, seen) for v in obj)
    elif isinstance(obj, set | frozenset) and any(isinstance(v, _Array | _Dtype) for v in obj):
        raise UnsafePickleError("array inside a set")
    return obj


def check_opcodes(data: bytes) -> None:
    """Walk the opcodes once before unpickling and refuse memo indices out of sequence.

    Pickle numbers memo slots 0, 1, 2...; a forged ``LONG_BINPUT 225530380`` in a 300-byte file
    makes CPython's unpickler grow its memo table to gigabytes. Malformed opcodes or lengths
    that run past the end of the data raise ValueError here, before anything is allocated.
    """
    for count, (opcode, arg, _) in enumerate(pickletools.genops(data)):
        if opcode.name in ("PUT", "BINPUT", "LONG_BINPUT") and (
            arg is None or not 0 <= int(arg) <= count
        ):
            raise UnsafePickleError(f"refused memo index {arg} at opcode {count}")


def safe_loads(data: bytes, *, encoding: str = "ASCII") -> Any:
    """Unpickle ``data`` with the restricted allow-list (``encoding`` as in pickle.loads)."""
    check_opcodes(data)
    return _finish(RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load(), {})


def safe_load(path: Path, *, encoding: str = "bytes") -> Any:
    """Unpickle the file at ``path`` safely; any refusal or corruption is a DataError naming it.

    ``encoding="bytes"`` keeps Python 2 strings as bytes, as CIFAR's batches need (b"data").
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return safe_loads(data, encoding=encoding)
    except UnsafePickleError as exc:
        raise DataError(f"{path}: not a safe data pickle: {exc}") from None
    except Exception as exc:  # a malformed pickle can raise almost anything; all mean "corrupt"
        raise DataError(
            f"{path}: corrupt or truncated pickle ({type(exc).__name__}: {exc})"
        ) from None
