"""The sub-pixel phases of a transposed convolution: which kernel taps serve which outputs.

Along one axis, with kernel size k, stride s and padding p, output index o lies at u = o + p on
the un-cropped grid; write u = s q + r, with phase r = u mod s. Input index q - t reaches u
through tap i = u - s (q - t) = r + s t, so only the taps i = r + s t (t >= 0, i < k) serve
phase r, and each phase is an ordinary stride-1 correlation of the input with its taps.

The CPU's NumPy forms (:mod:`abp_np.fast.columns`) and the Winograd route
(:mod:`abp_np.fast.winograd`) are both built on this arithmetic; it lives here so that neither
depends on the other, nor on :mod:`abp_np.functional`.
"""

from __future__ import annotations

__all__ = ["phases", "taps", "valid_range"]


def taps(k: int, s: int, r: int) -> int:
    """Number of kernel taps i = r + s t (t >= 0) with i < k: those of phase r."""
    return max(0, -(-(k - r) // s))


def valid_range(count: int, s: int, offset: int, size: int) -> tuple[int, int]:
    """The range [a, b) of q in [0, count) with 0 <= s q + offset < size."""
    a = max(0, -(offset // s))
    b = min(count, (size - 1 - offset) // s + 1)
    return a, max(a, b)


def phases(k: int, s: int, p: int, size_out: int) -> list[tuple[int, int, int, int]]:
    """The phases of one axis that have outputs, as ``(r, q0, Q, T)``.

    Phase r's outputs are o = s q + r - p for q = q0 .. q0 + Q - 1; its T taps are
    i = r + s t, t < T, and tap t of output q reads input index q - t.
    """
    out = []
    for r in range(s):
        q0 = -((r - p) // s)  # smallest q with s q + r - p >= 0
        Q = (size_out - 1 + p - r) // s - q0 + 1
        if Q > 0:
            out.append((r, q0, Q, taps(k, s, r)))
    return out
