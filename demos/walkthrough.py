"""From the equations to the code: alternating back-propagation by hand, in a few seconds.

Run:  python demos/walkthrough.py

This script writes out one ABP iteration with nothing hidden, using only the generator's
forward and backward passes, and then checks that the library's :class:`abp_np.ABP` does
exactly the same. Read it next to the module docstring of ``abp_np/abp.py``, which numbers
the equations (1)-(6).

The data: 32 small images (16 x 16, one channel) of blobs, made on the fly.
"""

from __future__ import annotations

import time

import numpy as np

import abp_np
from abp_np import layers as L

t0 = time.perf_counter()
rng = np.random.default_rng(0)

# --- the data Y: n examples in [-1, 1] ---------------------------------------------------------------
n, side = 32, 16
yy, xx = np.mgrid[0:side, 0:side]
centres = rng.uniform(4, 12, size=(n, 2))
Y = np.exp(-((yy - centres[:, 0, None, None]) ** 2 + (xx - centres[:, 1, None, None]) ** 2) / 8)
Y = (2 * Y - 1).astype(np.float32)[:, None]  # (n, 1, 16, 16)

# --- (1) the model  Y = f(Z; W) + eps,  Z ~ N(0, I_d) -----------------------------------------------
# f is a top-down ConvNet: Linear -> (16, 4, 4) -> two doubling transposed convolutions -> tanh.
d = 2
f = abp_np.Generator(
    [
        L.Linear(d, 16 * 4 * 4, init_std=0.1, rng=rng),
        L.Reshape((16, 4, 4)),
        L.BatchNorm2d(16),
        L.ReLU(),
        L.ConvTranspose2d(16, 8, 5, stride=2, padding=2, output_padding=1, init_std=0.1, rng=rng),
        L.BatchNorm2d(8),
        L.ReLU(),
        L.ConvTranspose2d(8, 1, 5, stride=2, padding=2, output_padding=1, init_std=0.1, rng=rng),
        L.Tanh(),
    ],
    latent_shape=(d,),
)
print(f.summary(), "\n")

sigma, delta, steps, lr = 0.3, 0.3, 10, 1e-4
Z0 = rng.standard_normal((n, d)).astype(np.float32)  # one chain per example, started from N(0, I)
Z = Z0.copy()

# Save the starting state so that the library can replay the same iteration afterwards.
start = f.state_dict()
noise = rng.standard_normal((steps, n, d)).astype(np.float32)  # the U of every Langevin step


def log_likelihood(Z):
    """(2): L = -sum_i ||Y_i - f(Z_i)||^2 / (2 sigma^2) - ||Z_i||^2 / 2."""
    r = Y - f.forward(Z)
    return float(-(r**2).sum() / (2 * sigma**2) - (Z**2).sum() / 2)


print(f"L before: {log_likelihood(Z):12.1f}")

# --- inferential back-propagation: (5), l Langevin steps on Z with W fixed ----------------------
for t in range(steps):
    residual = Y - f.forward(Z)  # Y - f(Z; W)
    # (3): dL/dZ = (1/sigma^2) (Y - f) df/dZ - Z. The backward pass of f, fed (Y - f)/sigma^2 at
    # its output, returns (1/sigma^2) (Y - f) df/dZ. need_param_grads=False: no dW work.
    dz = f.backward(residual / sigma**2, need_param_grads=False) - Z
    Z = Z + (delta**2 / 2) * dz + delta * noise[t]  # (5)

print(f"L after {steps} Langevin steps: {log_likelihood(Z):12.1f}")

# --- learning back-propagation: (6), one gradient step on W with Z fixed --------------------------
residual = Y - f.forward(Z)
# The SAME backward pass, now with need_param_grads=True. The optimisers descend, so we inject the
# gradient of J = -L / n; every layer's grads then holds dJ/dW = -(4) / n.
f.backward(-residual / (sigma**2 * n), need_param_grads=True)
opt = abp_np.SGD(lr=lr)  # the paper's SGD: momentum 0.5, weight decay, clipping, multipliers
opt.step(f)
print(f"L after one learning step: {log_likelihood(Z):12.1f}")
W_by_hand = f.state_dict()

# --- the library does the same -------------------------------------------------------------------
f.load_state_dict(start)
abp = abp_np.ABP(f, sigma=sigma, langevin_steps=steps, step_size=delta, optimizer=abp_np.SGD(lr=lr))
Z_lib = abp.langevin(Z0, Y, noise_arrays=noise)
abp.learn(Z_lib, Y)
# The same to float32 rounding, measured against the largest |Z|: inside its Langevin loop the
# library may take the Winograd path for a layer (abp_np/fast/winograd.py), which rounds differently.
same_z = np.allclose(Z_lib, Z, rtol=1e-5, atol=1e-5 * float(np.abs(Z).max()))
params = [name for name, *_ in f.named_parameters()]  # (state_dict also holds BN running stats)
same_w = all(np.allclose(W_by_hand[k], f.state_dict()[k], rtol=1e-5, atol=1e-7) for k in params)
print(f"\nABP.langevin gives the same Z: {same_z};  ABP.learn gives the same W: {same_w}")
print(f"({time.perf_counter() - t0:.1f} s)")
if not (same_z and same_w):
    raise SystemExit("the hand-written iteration and the library disagree")
