"""Models: the DiT backbone, text conditioning and audio codecs (Flax NNX, pure JAX)."""

import flax

# Parameters carry *logical* axis names (``nnx.with_partitioning``); jaxstage maps them to the mesh
# itself (jaxstage.parallel) and places them with jit out_shardings. Flax's eager sharding would
# instead demand a mesh at module construction, so it is switched off.
flax.config.update("flax_always_shard_variable", False)
