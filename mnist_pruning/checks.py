"""Argument checks: every user-facing value is validated here, before any long work, with a ValueError that
names the value and what is allowed.

Usage::

    from mnist_pruning.checks import _check_choice, _check_int, _check_ratio
    ratio = _check_ratio(0.9)                                  # 0.9; 1.5 -> "ratio must be in [0, 1) ..."
    method = _check_choice("global", ("l1", "global"), "method")
    epochs = _check_int(3, "epochs", minimum=1)

The pattern is torch's private ``_validate_*`` helpers: a function per kind of value, returning the value in its
canonical type, so callers write ``x = _check_...(x)`` once at the top. No torch, no numpy: the CLI, the
notebooks' first cell and the sparsity core all import it cheaply.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

__all__ = [
]


def _check_ratio(ratio: object, name: str = "ratio", what: str = "weights") -> float:
    """``ratio`` as a float if it is a real number in [0, 1); else a ValueError naming it.

    ``what`` is what the ratio is a fraction of, for the message ("weights", or "units" for structured pruning).
    """
    # bool is an Integral, but True/False as a ratio is almost certainly a bug in the caller.
    if (
        isinstance(ratio, bool)
        or not isinstance(ratio, numbers.Real)
        or not math.isfinite(float(ratio))
        or not 0.0 <= float(ratio) < 1.0
    ):
        raise ValueError(f"{name} must be in [0, 1) (the fraction of {what} removed), got {ratio!r}")
    return float(ratio)


def _check_fraction(value: object, name: str, low: float = 0.0, high: float = 1.0) -> float:
    """``value`` as a float in the closed interval ``[low, high]``; else a ValueError naming it."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(float(value))
        or not low <= float(value) <= high
    ):
        raise ValueError(f"{name} must be a number in [{low:g}, {high:g}], got {value!r}")
    return float(value)


def _check_int(value: object, name: str, minimum: int = 1) -> int:
    """``value`` as an int if it is an integer ``>= minimum`` (bools refused); else a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return int(value)


def _check_choice(value: object, allowed: Iterable[str], name: str) -> str:
    """``value`` if it is one of ``allowed``; else a ValueError listing them."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(map(repr, allowed))}")
    return value  # type: ignore[return-value]


def _check_choices(values: Iterable[object], allowed: Iterable[str], name: str) -> tuple[str, ...]:
    """Every one of ``values`` checked by :func:`_check_choice`; a bare string is one value, not its letters."""
    values = (values,) if isinstance(values, str) else tuple(values)
    return tuple(_check_choice(v, allowed, name) for v in values)


def _check_n_of_m(n: object, m: object) -> tuple[int, int]:
    """``(n, m)`` as ints if they form a valid N:M pattern (``m >= 2``, ``1 <= n < m``); else a ValueError."""
    # bool is an int subclass, but NMPruning(True, 4) is almost certainly a bug, not "1:4".
    if isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 2:
        raise ValueError(f"m must be an integer >= 2, got m={m!r} ({type(m).__name__})")
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 1 <= n < m:
        raise ValueError(f"n must be an integer with 1 <= n < m, got n={n!r} ({type(n).__name__}), m={m!r}")
    return int(n), int(m)


def _check_seeds(seeds: object) -> tuple[int, ...]:
    """``seeds`` as a tuple of distinct integers >= 0, in the given order; else a ValueError naming the value.

    Empty is refused (a sweep over no seed would silently do nothing), and so is a repeated seed (it would train
    the same baseline twice and its rows would be skipped as already recorded)."""
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Iterable):
        raise ValueError(f"seeds must be a sequence of integers >= 0, got {seeds!r}")
    values = tuple(seeds)
    if not values:
        raise ValueError("seeds must hold at least one seed, got none")
    out = tuple(_check_int(s, "seed", minimum=0) for s in values)
    repeated = sorted({s for s in out if out.count(s) > 1})
    if repeated:
        raise ValueError(f"seeds must be distinct, got {list(out)} (repeated: {repeated})")
    return out
