"""abp_np: Alternating Back-Propagation for generator networks, on NumPy and CuPy.

Han, Lu, Zhu, Wu, "Alternating Back-Propagation for Generator Network", AAAI 2017.

    Y = f(Z; W) + eps,   Z ~ N(0, I_d),   eps ~ N(0, sigma^2 I_D)

Layers with hand-written forward and backward passes (:mod:`abp_np.layers`), a
:class:`Generator` whose single backward pass serves both inference of Z and learning
of W, and the algorithm itself (:class:`ABP`, in :mod:`abp_np.abp`). Importing this
package needs NumPy only; CuPy, SciPy, imageio and soundfile are imported by the parts
that use them (:mod:`abp_np.data`, the GPU kernels).
"""

from . import evaluation, functional, gradcheck, layers, occlusion, optim
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
from .checkpoint import load_checkpoint, save_checkpoint
from .evaluation import PCA, interpolate, latent_grid, mean_abs_error
from .generator import Generator, build, object_generator, sound_generator, texture_generator
from .observation import Complete, Masked, Observation, Projection
from .occlusion import occlusion_mask
from .optim import SGD, Adam

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
