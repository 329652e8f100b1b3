"""abp_np: Alternating Back-Propagation for generator networks, on NumPy and CuPy.

Han, Lu, Zhu, Wu, "Alternating Back-Propagation for Generator Network", AAAI 2017.

    Y = f(Z; W) + eps,   Z ~ N(0, I_d),   eps ~ N(0, sigma^2 I_D)

Layers with hand-written forward and backward passes (:mod:`abp_np.layers`), a
:class:`Generator` whose single backward pass serves both inference of Z and learning
of W, and the algorithm itself (:mod:`abp_np.abp`). Importing this package needs NumPy
only; CuPy, SciPy, imageio and soundfile are imported by the parts that use them.
"""

from . import functional, layers
from .backend import default_rng, get_array_module, gpu_available, to_device, to_numpy, using_kernels
from .generator import Generator, build, object_generator, sound_generator, texture_generator

__version__ = "0.1.0"

__all__ = [
    "Generator",
    "build",
    "default_rng",
    "functional",
    "get_array_module",
    "gpu_available",
    "layers",
    "object_generator",
    "sound_generator",
    "texture_generator",
    "to_device",
    "to_numpy",
    "using_kernels",
]
