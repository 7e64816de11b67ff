"""How close two float32 results must be when they were computed differently.

Two kinds of comparison are in this suite:

- **Bit-exact** (`np.testing.assert_array_equal`): the same computation
  through the same kernels in the same environment, e.g. extraction with 1
  or 3 workers, a resumed run against an uninterrupted one. Any difference
  there is a bug, on every CPU.
- **Across kernels** (`assert_close_across_kernels`): the same math through
  other kernels, e.g. outputs stored in a fixture on another CPU, a
  SavedModel's graph (Grappler fuses ops) against Keras eager, XLA under JAX
  against TensorFlow's oneDNN. A float32 reduction summed in another order
  (oneDNN picks its blocking and vector width by the CPU's ISA: SSE4.1, AVX2,
  AVX-512, AMX) differs by a few units in the last place (ulp) of the
  magnitudes being summed, not of the result. So the bound is absolute,
  `KERNEL_ULPS` ulps of the compared tensor's scale, where the scale is its
  largest magnitude but at least 1: the encoder's activations are
  layer-normalized to order 1, so even a small output (a probability of
  0.01) carries the rounding of order-1 intermediates.

How `KERNEL_ULPS` was measured (2026-12-03, Intel Xeon with AVX-512 and AMX,
`lscpu`: "Intel(R) Xeon(R) Processor"): the release-0.1.0 fixture models
(`tests/fixtures/*_v0.1.0.keras`, 2 blocks) against their stored outputs,
with oneDNN limited by `ONEDNN_MAX_CPU_ISA` to SSE41, AVX, AVX2, AVX512_CORE
and unlimited: at most 4.9 ulps of the scale (AVX2: 1.61e-6 on outputs of
scale 2.77, the failure CI saw on an AVX2-only EPYC); JAX against TensorFlow
at most 12 ulps (1.39e-6, SSE41). 32 ulps (3.8e-6 at scale 1) leaves a
factor of 2.7 over the worst measured for CPUs not measured here.

The front end's features are another case (`FRONTEND_ATOL`): the CQT sums
filters whose terms cancel, so a bin's rounding is that of its terms, not of
its small result, and `log(1e-6 + x)` then CMVN's division by a channel's
standard deviation magnify it. One clip alone against the same clip in a
padded batch of two (other GEMM shapes): 4.8e-7 at most under SSE41, AVX,
AVX-512 and AMX, 3.1e-4 under AVX2 (whose kernels block the batch of two
differently); 1e-3, also the bound against librosa's features, leaves a
factor of 3, and a row that saw its neighbour would differ by order 1.
"""

import numpy as np

FLOAT32_EPS = float(np.finfo(np.float32).eps)  # 2**-23 = 1.19e-7

# Units in the last place of the compared tensor's scale (see the module docstring).
KERNEL_ULPS = 32
# Normalized front-end features of one clip computed through other kernels.
FRONTEND_ATOL = 1e-3


def kernel_atol(reference, ulps: float = KERNEL_ULPS) -> float:
    """The absolute tolerance for `reference` computed through other kernels:
    `ulps` * float32 eps * max(1, max |reference|)."""
    reference = np.asarray(reference, np.float64)
    scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    return ulps * FLOAT32_EPS * max(scale, 1.0)


def assert_close_across_kernels(actual, reference, ulps: float = KERNEL_ULPS, what=""):
    """Asserts `actual` equals `reference` within `kernel_atol(reference, ulps)`;
    prints the difference in ulps of the scale (shown by `pytest -s`)."""
    actual = np.asarray(actual, np.float64)
    reference = np.asarray(reference, np.float64)
    atol = kernel_atol(reference, ulps)
    worst = float(np.max(np.abs(actual - reference))) if reference.size else 0.0
    print(
        f"{what or 'compared'}: max |difference| {worst:.2e} = {worst * ulps / atol:.1f} ulps"
    )
    np.testing.assert_allclose(actual, reference, rtol=0, atol=atol, err_msg=what)
