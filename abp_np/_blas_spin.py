"""Set before NumPy loads its BLAS: OpenBLAS' idle threads go to sleep at once.

After each GEMM, OpenBLAS keeps its worker threads spinning (``sched_yield`` in a loop) for some
2^28 cycles, about a tenth of a second, in case another GEMM follows. In an ABP iteration what
follows is mostly NOT a GEMM: a Winograd transform, batch norm, an activation, which
:mod:`abp_np.fast.threads` splits over the cores. A spinning BLAS thread takes half of a core
from them, and the split would gain nothing. ``OPENBLAS_THREAD_TIMEOUT=4`` (2^4 cycles, the least
OpenBLAS takes) makes the idle threads sleep at once; waking them costs microseconds, against
the milliseconds of the GEMMs that follow.

OpenBLAS reads the variable once, when NumPy is imported, so this module is the first thing
``import abp_np`` runs. It changes nothing when:

* ``OPENBLAS_THREAD_TIMEOUT`` is already set (yours is kept);
* ``ABP_NUM_THREADS=1`` (one thread: the path as it was, spinning included);
* NumPy was imported before abp_np (too late: set the variable yourself to have the effect).

:data:`SHORT_SPIN` records whether OpenBLAS was loaded with a short spin (any value of ours
or yours); ``python -m abp_np.bench`` prints it.
"""

import os
import sys

_NUMPY_FIRST = "numpy" in sys.modules

if not _NUMPY_FIRST and os.environ.get("ABP_NUM_THREADS", "").strip() != "1":
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

#: True when NumPy's OpenBLAS was (or will be) loaded with ``OPENBLAS_THREAD_TIMEOUT`` set.
SHORT_SPIN = bool(os.environ.get("OPENBLAS_THREAD_TIMEOUT", "").strip()) and not _NUMPY_FIRST
