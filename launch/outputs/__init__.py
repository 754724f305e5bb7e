"""Launcher outputs, one concern per module, all re-exported here (``from launch import outputs`` keeps working):

* :mod:`launch.outputs.files`: ``write_json_atomic``, ``save_npz_atomic``, ``save_synthetic`` (the self-describing
  ``synthetic.npz``), ``to_jsonable``
* :mod:`launch.outputs.grids`: ``save_image_grid``, ``grid_layout``
* :mod:`launch.outputs.curves`: ``save_curves``, ``save_heatmap``, ``save_accuracy_curve``, ``save_bar_chart``
* :mod:`launch.outputs.metrics`: ``MetricsWriter``, ``read_metrics`` (``metrics.jsonl``)
* :mod:`launch.outputs.progress`: ``Progress``, ``format_duration``
* :mod:`launch.outputs.tensorboard`: ``TensorBoardWriter`` (event files under ``W/tensorboard/``, tensorboardX)

Pure Python + numpy (PIL for grids, matplotlib's Agg canvas for curves); no jax import, no global state. Every
file is written atomically through :func:`ddjax.atomic.atomic_open` (the one helper shared with the tfds cache and
the pretrained store), so a crash never leaves a half-written PNG/JSON/NPZ behind.
"""
from launch.outputs.curves import save_accuracy_curve, save_bar_chart, save_curves, save_heatmap
from launch.outputs.files import save_npz_atomic, save_synthetic, to_jsonable, write_json_atomic
from launch.outputs.grids import grid_layout, save_image_grid
from launch.outputs.metrics import MetricsWriter, read_metrics
from launch.outputs.progress import Progress, format_duration
from launch.outputs.tensorboard import TensorBoardWriter

__all__ = [
    "save_image_grid",
    "grid_layout",
    "save_curves",
    "save_heatmap",
    "save_accuracy_curve",
    "save_bar_chart",
    "MetricsWriter",
    "read_metrics",
    "Progress",
    "TensorBoardWriter",
    "write_json_atomic",
    "save_npz_atomic",
    "save_synthetic",
    "to_jsonable",
    "format_duration",
]
