"""The mixed-precision policy (``precision.*``, docs/precision.md).

Master weights, gradients, optimizer moments and the EMA are float32. ``precision.compute`` sets the
dtype of the DiT's matmuls and activations (``auto``: bfloat16 on GPU and TPU, float32 on CPU, where
bfloat16 is slower). Whatever it is, these stay float32: layer norms (statistics and affine), softmax
and the attention logits, rotary and Fourier features, the DiT's output (cast back before the loss),
the loss, the per-block summaries, the REPA projector and alignment loss, the regime and structure
math. The codec, the T5 and the SSL encoder keep their own dtype settings.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

COMPUTE_CHOICES = ("auto", "float32", "bfloat16")
ACCELERATORS = ("gpu", "cuda", "rocm", "tpu")


def compute_dtype(choice: str, platform: str | None = None) -> jnp.dtype:
    """The DiT's compute dtype for ``precision.compute=choice`` on ``platform`` (default: JAX's backend)."""
    if choice not in COMPUTE_CHOICES:
        raise ValueError(f"precision.compute={choice!r} is not one of {', '.join(COMPUTE_CHOICES)}")
    if choice == "auto":
        platform = jax.default_backend() if platform is None else platform
        choice = "bfloat16" if platform in ACCELERATORS else "float32"
    return jnp.dtype(choice)
