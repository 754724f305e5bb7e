"""Test set-up: 8 simulated CPU devices (must be set before jax is imported) and 64-bit-free determinism."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# No persistent compilation cache in the suite (launch.compile_cache): runs use tmp workdirs, and each would
# otherwise store its programs beside them; subprocess runs inherit this.
os.environ.setdefault("DDJAX_CACHE", "off")
