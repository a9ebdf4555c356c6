"""Thread policy: how many CPU threads poisonlab uses, decided in one place before torch loads.

Why. PyTorch's CPU kernels run on an OpenMP thread pool (libgomp on Linux; scikit-learn ships its
own copy). After each parallel region libgomp's idle workers spin-wait for the next one, about
300,000 iterations by default. On a machine where another process is busy (a browser, a CI
neighbour, a second job), the spinning workers compete for the cores with the thread doing the
work, and a small network's many tiny ops each cost several times their CPU: three epochs of
cnn-small on digits took 30 s instead of 3 s beside one busy process. Measurements for every
setting are in ``bench/results/threads.md`` (``python -m bench threads``).

Policy (every entry point applies it: the ``poisonlab`` commands, ``python -m bench``, experiment
workers, local and Ray, and the test session).

1. ``OMP_WAIT_POLICY=PASSIVE`` unless the user set ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``:
   idle workers sleep at once. libgomp reads these variables once, when it loads, i.e. at
   ``import torch``; :func:`prepare` sets it, and ``import poisonlab`` calls :func:`prepare`, so a
   program that imports poisonlab before torch gets it. A program that imported torch first keeps
   libgomp's default (:func:`describe` says so); set the variable in the shell instead.
2. Intra-op threads, in this order: ``use_threads(N)`` (``--threads N`` in every command),
   ``POISONLAB_THREADS``, ``OMP_NUM_THREADS`` (what Ray and batch schedulers set), else chosen
   by the work (:func:`auto_threads`): one thread for small images, whose ops are too small to
   share, and every core for larger ones. The count applies to torch and to the OpenMP/BLAS
   pools of NumPy, SciPy and scikit-learn (through ``threadpoolctl``, and through the
   environment for libraries that load later and for child processes). Where the count came
   from is recorded (:class:`ThreadSettings`): ``use_threads(threads=2)``, ``--threads``...
3. A count below 1 is an error naming where it came from; more than the machine's cores is
   clamped to the cores with a warning (oversubscription is what this policy prevents).
4. Freed memory is kept for reuse (glibc only, unless the user tuned malloc through
   ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TOP_PAD_`` or
   ``GLIBC_TUNABLES``): :func:`keep_freed_memory`. Each training step and forward pass frees
   and re-allocates tens of MB of activations; by default glibc gives the top of its heap back
   to the OS as soon as 64 MB are free there and serves blocks above its adaptive threshold with
   fresh ``mmap``, so the next step faults every page in again (zero-filled by the kernel).
   Measured on cnn-small, 28×28, bfloat16, batch 128, 2 threads (bench/results/scan_scale.md):
   150 training steps 8.1 s wall with 3.2 s system time and 1.9 million page faults, 6.3 s
   with 0.3 s and 3,500 faults once freed memory stays; the weights are bit-identical.

Library use: ``import poisonlab`` (before torch) gives rule 1; ``poisonlab.runtime.use_threads()``
applies rule 2 (``use_threads(1)``, ``use_threads(image_shape=(1, 28, 28))``). Nothing here
imports torch at module level, so the CLI can answer ``--help`` without it.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from poisonlab.errors import ConfigError

THREADS_ENV = "POISONLAB_THREADS"
_WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
# Thread-count variables of the OpenMP and BLAS runtimes that load after we decide (and of
# child processes, which inherit the environment).
_COUNT_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# Images with at most this many values (channels × height × width) run on one thread: see
# auto_threads and bench/results/threads.md.
SMALL_IMAGE_VALUES = 256
# Image shapes of the built-in data sources, for the automatic choice before any data is loaded
# (experiment cells, the demo); tests check them against the loaded data.
BUILTIN_SHAPES = {"digits": (1, 8, 8), "fashion-mnist": (1, 28, 28)}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ThreadSettings:
    """The thread settings in effect, as recorded in summary.json and run records."""

    threads: int
    # "use_threads(threads=2)", "--threads" (the CLI), "POISONLAB_THREADS", "OMP_NUM_THREADS",
    # "auto (...)", ...
    source: str
    cores: int
    omp_wait_policy: str  # the value libgomp read when torch loaded, or a note why unknown
    wait_policy_source: str  # "poisonlab", "user" or "torch was loaded before poisonlab"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


_wait: tuple[str, str] | None = None  # (policy, who set it), fixed by the first prepare()
_user_counts: dict[str, str] = {}  # OMP_NUM_THREADS as the process found it
_settings: ThreadSettings | None = None
_warned: set[tuple[str, int]] = set()  # clamped counts already warned about


def cpu_count() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def prepare() -> None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user chose a wait policy (module docstring).

    Idempotent, cheap, and torch-free. Effective only if it runs before OpenMP loads (before
    ``import torch``); afterwards it records that the policy could not be set.
    """
    global _wait
    if _wait is not None:
        return
    keep_freed_memory()
    if os.environ.get("OMP_NUM_THREADS", "").strip():
        _user_counts["OMP_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"].strip()
    if any(var in os.environ for var in _WAIT_VARS):
        chosen = ", ".join(f"{v}={os.environ[v]}" for v in _WAIT_VARS if v in os.environ)
        _wait = (chosen, "user")
    elif "torch" in sys.modules:
        _wait = ("libgomp default (spinning)", "torch was loaded before poisonlab")
    else:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        _wait = ("OMP_WAIT_POLICY=PASSIVE", "poisonlab")


# glibc's mallopt parameters (malloc.h) and the environment variables a user tunes them with
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MALLOC_VARS = (
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "GLIBC_TUNABLES",
)
#: Free memory glibc may keep at the top of its heap before returning it to the OS (default:
#: twice the adaptive mmap threshold, i.e. at most 64 MB).
KEEP_FREED_BYTES = 1 << 30
#: Blocks from this size on come from mmap (glibc's largest allowed value on 64-bit systems;
#: by default the threshold starts at 128 kB and only adapts after the first large free).
MMAP_THRESHOLD_BYTES = 32 << 20
#: Extra memory requested whenever the heap grows (fewer, larger growths).
TOP_PAD_BYTES = 64 << 20
_malloc: str | None = None  # what keep_freed_memory did, for describe()


def keep_freed_memory() -> str:
    """Let glibc keep freed memory for reuse instead of returning it to the OS (rule 4 of the
    module docstring); returns what it did. Idempotent; does nothing on other C libraries or
    when the user tuned malloc through the environment. Only the allocator's bookkeeping
    changes: every computation gives bit-identical results."""
    global _malloc
    if _malloc is not None:
        return _malloc
    if any(var in os.environ for var in _MALLOC_VARS):
        _malloc = "user's malloc settings"
        return _malloc
    _malloc = "C library default"
    if not sys.platform.startswith("linux"):
        return _malloc
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return _malloc
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = [
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
        mallopt(_M_TRIM_THRESHOLD, KEEP_FREED_BYTES),
        mallopt(_M_TOP_PAD, TOP_PAD_BYTES),
    ]
    if all(done):
        _malloc = f"freed memory kept up to {KEEP_FREED_BYTES >> 20} MB (glibc mallopt)"
    return _malloc


def parse_threads(value: object, *, origin: str = "threads") -> int:
    """A thread count from ``value`` (an int or its text), checked against the machine.

    Raises ConfigError naming ``origin`` for anything that is not a whole number >= 1; a count
    above the machine's cores is clamped to the cores with a warning.
    """
    cores = cpu_count()
    text = str(value).strip()
    try:
        if isinstance(value, bool | float):
            raise ValueError
        count = int(text)
    except ValueError:
        count = None
    if count is None or count < 1:
        raise ConfigError(
            f"{_given(origin, text)}: expected a whole number of threads from 1 to {cores} "
            "(this machine's cores)"
        )
    if count > cores:
        if (origin, count) not in _warned:
            _warned.add((origin, count))
            log.warning(
                "%s is more than this machine's %d cores; using %d threads",
                _given(origin, text),
                cores,
                cores,
            )
        return cores
    return count


def _given(origin: str, text: str) -> str:
    """```threads` 0`` for a parameter (``--threads 0`` in the CLI), ``POISONLAB_THREADS=0`` for a
    variable."""
    return f"{origin}={text}" if origin.isupper() else f"`{origin}` {text}"


def auto_threads(image_shape: Sequence[int] | None = None) -> int:
    """The thread count chosen by the work when nobody asked for one.

    One thread for images of at most ``SMALL_IMAGE_VALUES`` values (8×8 digits, 16×16 gray):
    their ops take microseconds, less than waking a second thread, and one thread cannot be
    slowed down by a busy neighbour (bench/results/threads.md). Every core otherwise, and when
    the work is unknown.
    """
    if image_shape is not None:
        values = 1
        for size in image_shape:
            values *= int(size)
        if values <= SMALL_IMAGE_VALUES:
            return 1
    return cpu_count()


def sized_image_shape(height: int, width: int) -> tuple[int, int] | None:
    """What :func:`auto_threads` decides from for images of ``height`` × ``width`` whose channels
    are not known before loading (an image folder or GTSRB at ``--image-size``: 1 or 3): (H, W)
    when gray and colour images get the same count (small even in colour, or large even in
    gray), else None, the unknown work."""
    small_gray = height * width <= SMALL_IMAGE_VALUES
    small_colour = 3 * height * width <= SMALL_IMAGE_VALUES
    return (height, width) if small_gray == small_colour else None


def expected_image_shape(source: object, size: tuple[int, int] | None) -> tuple[int, ...] | None:
    """The image shape :func:`auto_threads` decides from before the data loads: the requested
    ``size`` (height, width; :func:`sized_image_shape`) when one is given, else the shape of a
    built-in ``source`` by name, else None (unknown work)."""
    if size is not None:
        return sized_image_shape(*size)
    return builtin_image_shape(source) if isinstance(source, str) else None


def builtin_image_shape(source: str) -> tuple[int, int, int] | None:
    """(C, H, W) of a built-in data source by name (``digits``), None for anything else."""
    return BUILTIN_SHAPES.get(source)


def requested_threads(threads: int | None = None) -> tuple[int | None, str]:
    """An explicit thread count and where it came from: ``threads`` (the caller's argument, the
    --threads option in the CLI), then POISONLAB_THREADS, then OMP_NUM_THREADS as the process
    found them (not as poisonlab set them for the libraries); (None, "auto") when none is set.
    """
    prepare()
    if threads is not None:
        return parse_threads(threads), "threads"
    text = os.environ.get(THREADS_ENV, "").strip()  # poisonlab never sets it: read it live
    if text:
        return parse_threads(text, origin=THREADS_ENV), THREADS_ENV
    if "OMP_NUM_THREADS" in _user_counts:
        return parse_threads(_user_counts["OMP_NUM_THREADS"], origin="OMP_NUM_THREADS"), (
            "OMP_NUM_THREADS"
        )
    return None, "auto"


def use_threads(
    threads: int | None = None,
    *,
    image_shape: Sequence[int] | None = None,
    source: str | None = None,
) -> ThreadSettings:
    """Apply the thread policy now and return what it chose (module docstring, rule 2).

    Parameters
    ----------
    threads : int or None
        An explicit count; None falls back to POISONLAB_THREADS, OMP_NUM_THREADS, then
        :func:`auto_threads` of ``image_shape``.
    image_shape : (C, H, W) or None
        The images the work will process, for the automatic choice.
    source : str or None
        Where an explicit ``threads`` came from, as recorded: "--threads" from the CLI, "executor
        share of the cores"...; by default the call itself (``use_threads(threads=2)``). A count
        from the environment or the automatic choice keeps its own source.

    Raises
    ------
    ConfigError
        A count below 1, or a POISONLAB_THREADS / OMP_NUM_THREADS that is not a number.
    """
    global _settings
    prepare()
    count, origin = requested_threads(threads)
    if count is None:
        count = auto_threads(image_shape)
        what = "unknown work" if image_shape is None else "×".join(map(str, image_shape))
        origin = f"auto ({what})"
    elif threads is not None:
        origin = source if source is not None else f"use_threads(threads={threads!r})"
    for var in _COUNT_VARS:  # for runtimes that load later (torch too) and child processes
        os.environ[var] = str(count)
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != count:
        torch.set_num_threads(count)
    _limit_loaded_pools(count)
    assert _wait is not None
    _settings = ThreadSettings(count, origin, cpu_count(), _wait[0], _wait[1])
    log.debug("threads: %s", describe())
    return _settings


def _limit_loaded_pools(count: int) -> None:
    """Cap the OpenMP/BLAS pools already loaded (NumPy's OpenBLAS, scikit-learn's libgomp)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn depends on it; without it the environment still applies
        return
    threadpool_limits(limits=count)


def current() -> ThreadSettings | None:
    """The settings applied by the last :func:`use_threads` (None before the first call)."""
    return _settings


def record() -> dict[str, Any]:
    """What is in effect now, JSON-ready, for summary.json and run records.

    The settings of the last :func:`use_threads`, or, when the policy was never applied (a
    library caller), torch's own thread count and the wait policy.
    """
    if _settings is not None:
        return _settings.to_dict()
    prepare()
    assert _wait is not None
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    return {
        "threads": threads,
        "source": "torch's default",
        "cores": cpu_count(),
        "omp_wait_policy": _wait[0],
        "wait_policy_source": _wait[1],
    }


def describe() -> str:
    """One line for logs and benchmark headers: torch threads, their source, the wait policy,
    the malloc setting."""
    prepare()
    assert _wait is not None
    policy = f"{_wait[0]} (set by {_wait[1]})"
    if _settings is None:
        torch = sys.modules.get("torch")
        count = (
            f"torch {torch.get_num_threads()} threads" if torch is not None else "torch not loaded"
        )
        return f"{count} (torch's default), {policy}, {cpu_count()} cores; malloc: {_malloc}"
    return (
        f"{_settings.threads} threads ({_settings.source}), {policy}, {_settings.cores} cores; "
        f"malloc: {_malloc}"
    )
