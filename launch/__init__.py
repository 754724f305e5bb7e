"""Command-line launcher for ddjax runs: ``python -m launch.main --config=... --workdir=...``."""
