"""abp_np: Alternating Back-Propagation for generator networks, on NumPy and CuPy.

Han, Lu, Zhu, Wu, "Alternating Back-Propagation for Generator Network", AAAI 2017.

    Y = f(Z; W) + eps,   Z ~ N(0, I_d),   eps ~ N(0, sigma^2 I_D)

Layers with hand-written forward and backward passes (:mod:`abp_np.layers`), a
:class:`Generator` whose single backward pass serves both inference of Z and learning
of W, and the algorithm itself (:class:`ABP`, in :mod:`abp_np.abp`). Importing this
package needs NumPy only; CuPy, SciPy, imageio and soundfile are imported by the parts
that use them (:mod:`abp_np.io.data`, the GPU kernels).

The package in tiers, from the ground up (each imports only from the tiers below it):

1. :mod:`~abp_np.backend` -- NumPy or CuPy (``xp``), devices, the one switch of the routes.
2. :mod:`abp_np.fast` -- the speed routes (C and CUDA kernels, Winograd, CUDA graphs).
3. The method -- :mod:`~abp_np.functional` (the plain ``xp`` reference of every operation),
   :mod:`~abp_np.layers`, :mod:`~abp_np.generator`, :mod:`~abp_np.observation`,
   :mod:`~abp_np.optim`, :mod:`~abp_np.abp` (the algorithm), :mod:`~abp_np.gradcheck`.
4. :mod:`abp_np.io` -- data in and out, checkpoints; :mod:`~abp_np.training` -- the run
   around the algorithm (batches, checkpoints, rollback, Ctrl-C).
5. :mod:`abp_np.tools` -- metrics and baselines, occlusions, charts, the ``abp`` command,
   the benchmark.

Modules that moved into the sub-packages keep their old names: ``abp_np.io.data``,
``abp_np.tools.evaluation``, ``python -m abp_np.bench`` and the others still work.
"""

import importlib as _importlib
import importlib.abc as _abc
import importlib.machinery as _machinery
import sys as _sys

from . import (
    _blas_spin,  # noqa: F401  (first: sets OpenBLAS' spin before NumPy loads it)
    _malloc,  # noqa: F401  (glibc's malloc keeps freed memory: fewer page faults)
    functional,
    gradcheck,
    layers,
    optim,
)
from .abp import ABP, DivergenceError
from .backend import (
    DeviceOutOfMemoryError,
    default_rng,
    get_array_module,
    gpu_available,
    to_device,
    to_numpy,
    using_kernels,
)
from .generator import (
    Generator,
    build,
    linear_generator,
    object_generator,
    sound_generator,
    texture_generator,
)
from .io.checkpoint import load_checkpoint, save_checkpoint
from .observation import Complete, Masked, Observation, Projection, RandomProjections
from .optim import SGD, Adam
from .tools import evaluation, occlusion
from .tools.evaluation import PCA, interpolate, latent_grid, mean_abs_error
from .tools.occlusion import occlusion_mask

__version__ = "0.1.0"

__all__ = [
    "ABP",
    "PCA",
    "SGD",
    "Adam",
    "Complete",
    "DivergenceError",
    "DeviceOutOfMemoryError",
    "Generator",
    "Masked",
    "Observation",
    "Projection",
    "RandomProjections",
    "build",
    "default_rng",
    "evaluation",
    "functional",
    "get_array_module",
    "gpu_available",
    "gradcheck",
    "interpolate",
    "latent_grid",
    "layers",
    "linear_generator",
    "load_checkpoint",
    "mean_abs_error",
    "object_generator",
    "occlusion",
    "occlusion_mask",
    "optim",
    "save_checkpoint",
    "sound_generator",
    "texture_generator",
    "to_device",
    "to_numpy",
    "using_kernels",
]


# Old module names -> their places in the sub-packages. ``import abp_np.io.data`` and
# ``python -m abp_np.bench`` keep working, and give the very module object of the new place.
_MOVED = {
    "data": "io.data",
    "datasets": "io.datasets",
    "checkpoint": "io.checkpoint",
    "evaluation": "tools.evaluation",
    "occlusion": "tools.occlusion",
    "plot": "tools.plot",
    "cli": "tools.cli",
    "bench": "tools.bench",
    "winograd": "fast.winograd",
    "cuda_graph": "fast.cuda_graph",
    "_cpu": "fast.cpu",
    "_cuda": "fast.cuda",
}


class _MovedModule(_abc.Loader):
    """Loads an old module name as the module at its new place (the same object)."""

    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec):
        return _importlib.import_module(self.target)

    def exec_module(self, module) -> None:
        pass

    def get_code(self, fullname):  # for ``python -m abp_np.bench``
        return _importlib.util.find_spec(self.target).loader.get_code(self.target)


class _MovedFinder(_abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        head, _, tail = fullname.partition(".")
        if head != __name__ or tail not in _MOVED:
            return None
        return _machinery.ModuleSpec(fullname, _MovedModule(f"{__name__}.{_MOVED[tail]}"))


if not any(isinstance(f, _MovedFinder) for f in _sys.meta_path):
    _sys.meta_path.append(_MovedFinder())


def __getattr__(name: str):
    if name in _MOVED:
        return _importlib.import_module(f"{__name__}.{_MOVED[name]}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
