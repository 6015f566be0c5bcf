"""jaxstage: accelerator-first JAX/Flax training of audio diffusion models with stage-adaptive training."""

__version__ = "0.1.0"
