"""Test setup: CPU only, 8 fake devices for mesh tests, fp32, a persistent compilation cache."""

import os

# Must be set before jax is imported anywhere.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()

import jax  # noqa: E402

jax.config.update("jax_compilation_cache_dir", os.environ.get("JAXSTAGE_TEST_CACHE", "/tmp/jaxstage_jax_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
