"""One array validator for every data class and public function that takes arrays.

:func:`check_array` converts its input, then checks shape, finiteness, range and integer-ness, and
raises a ``ValueError`` that names the argument, what was expected and what was found::

    positions = check_array(positions, "positions", shape=(None, n_beads, 3), dtype=np.float32)

Shapes use ``None`` for "any length"; a string in a shape names a dimension in the message
(``shape=("n_frames", n, 3)``) and accepts any length.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np

Dim = Union[int, str, None]


def _shape_text(shape: Sequence[Dim]) -> str:
    return "(" + ", ".join("n" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def check_array(value, name: str, *, shape: Optional[Sequence[Dim]] = None, dtype=None, finite: bool = True,
                min: Optional[float] = None, max: Optional[float] = None, min_exclusive: bool = False,
                integer: bool = False, unit: str = "") -> np.ndarray:
    """``value`` as an array, checked.

    Parameters
    ----------
    value : array-like
    name : str
        The argument's name, used in every message.
    shape : sequence of int, str or None, optional
        Expected shape; ``None`` or a name matches any length.
    dtype : numpy dtype, optional
        Convert to it (default: keep the input's numeric dtype).
    finite : bool
        Refuse NaN and infinities (floats).
    min, max : float, optional
        Allowed range, inclusive (``min_exclusive``: values must be greater than ``min``).
    integer : bool
        Values must be whole numbers (converted to int64 unless ``dtype`` says otherwise).
    unit : str
        Shown after the numbers in range messages ("nm", "K").
    """
    try:
        arr = np.asarray(value) if dtype is None else np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array, got {type(value).__name__} ({exc})") from None
    if arr.dtype == object or arr.dtype.kind in "USV":
        raise ValueError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if shape is not None:
        if arr.ndim != len(shape) or any(isinstance(d, int) and not isinstance(d, bool) and arr.shape[i] != d
                                         for i, d in enumerate(shape)):
            raise ValueError(f"{name} must have shape {_shape_text(shape)}, got {arr.shape}")
    u = f" {unit}" if unit else ""
    if finite and arr.dtype.kind in "fc" and arr.size and not np.all(np.isfinite(arr)):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise ValueError(f"{name} must be finite; {name}[{', '.join(map(str, bad))}] is {arr[bad]}")
    if integer:
        if arr.dtype.kind == "b":
            raise ValueError(f"{name} must hold integers, got booleans")
        if arr.dtype.kind == "f":
            if arr.size and not np.all(np.isfinite(arr) & (arr == np.round(arr))):
                raise ValueError(f"{name} must hold whole numbers, got {arr.ravel()[~(arr.ravel() == np.round(arr.ravel()))][:3]}")
        elif arr.dtype.kind not in "iu":
            raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
        if dtype is None:
            arr = arr.astype(np.int64)
    if arr.size and min is not None:
        low = arr <= min if min_exclusive else arr < min
        if np.any(low):
            i = tuple(int(k) for k in np.argwhere(low)[0])
            raise ValueError(f"{name} must be {'>' if min_exclusive else '>='} {min}{u}; "
                             f"{name}[{', '.join(map(str, i))}] is {arr[i]}")
    if arr.size and max is not None and np.any(arr > max):
        i = tuple(int(k) for k in np.argwhere(arr > max)[0])
        raise ValueError(f"{name} must be <= {max}{u}; {name}[{', '.join(map(str, i))}] is {arr[i]}")
    return arr


def check_box(box, name: str = "box", n_frames: Optional[int] = None, dtype=np.float64) -> np.ndarray:
    """Box vectors as rows, shape (n_frames, 3, 3) (or (3, 3) when ``n_frames`` is None), nm, finite, with
    positive volume in every frame."""
    arr = check_array(box, name, shape=(3, 3) if n_frames is None else (n_frames, 3, 3), dtype=dtype)
    vol = np.linalg.det(arr.astype(np.float64))
    if np.any(np.atleast_1d(vol) <= 0):
        k = int(np.argmin(np.atleast_1d(vol)))
        where = "" if n_frames is None else f" in frame {k}"
        raise ValueError(f"{name} vectors (rows, nm) must span a positive volume; the volume{where} is "
                         f"{np.atleast_1d(vol)[k]:.4g} nm^3")
    return arr


def check_scalar(value, name: str, *, min: Optional[float] = None, max: Optional[float] = None,
                 min_exclusive: bool = False, unit: str = "") -> float:
    """A finite real number in range, as float; names ``name`` when it is not."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number{' in ' + unit if unit else ''}, got {type(value).__name__} {value!r}")
    return float(check_array(float(value), name, min=min, max=max, min_exclusive=min_exclusive, unit=unit))


__all__ = ["check_array", "check_box", "check_scalar"]
