"""Test set-up: 8 simulated CPU devices (must be set before jax is imported) and 64-bit-free determinism."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
