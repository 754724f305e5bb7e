"""Launcher output helpers: image grids, loss/accuracy curves, ``metrics.jsonl``, progress, atomic writers.

Pure Python + numpy (PIL for grids, matplotlib's Agg canvas for curves); no jax import, no global state.
Every file is written atomically: to a temporary file in the destination directory, flushed and fsynced, then
moved into place with :func:`os.replace`, so a crash never leaves a half-written PNG/JSON/NPZ behind (a temp file
is removed again if writing fails).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import tempfile
import time
from typing import Any, Callable, Iterator, Mapping, Sequence, TextIO

import numpy as np

from ddjax.errors import CheckpointError, ConfigError

__all__ = [
    "save_image_grid",
    "grid_layout",
    "save_curves",
    "save_heatmap",
    "save_accuracy_curve",
    "MetricsWriter",
    "read_metrics",
    "Progress",
    "write_json_atomic",
    "save_npz_atomic",
    "save_synthetic",
    "to_jsonable",
    "format_duration",
]


# --------------------------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temp file beside ``path``; on clean exit fsync it and ``os.replace`` it onto ``path``.

    On an exception the temp file is deleted and ``path`` is left untouched. Parent directories are created.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        kwargs = {} if "b" in mode else {"encoding": "utf-8", "newline": "\n"}
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def to_jsonable(value: Any) -> Any:
    """Convert numpy/jax scalars and arrays (recursively inside dicts/lists/tuples) to plain JSON types.

    Integer scalars become ``int``, floating scalars ``float`` (via ``float()``), booleans ``bool``, arrays
    nested lists. Other objects are returned unchanged (``json`` then decides).
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if hasattr(value, "__array__") and hasattr(value, "shape"):  # np.ndarray, jax.Array
        arr = np.asarray(value)
        if arr.shape == ():
            item = arr.item()
            if arr.dtype.kind == "f":
                return float(item)
            return item
        return to_jsonable(arr.tolist())
    return value


def _json_default(value: Any) -> Any:
    converted = to_jsonable(value)
    if converted is value:
        raise TypeError(f"object of type {type(value).__name__} is not JSON serializable")
    return converted


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as JSON (indent 2, sorted keys, trailing newline) atomically; numpy/jax values converted."""
    text = json.dumps(to_jsonable(obj), indent=2, sort_keys=True, default=_json_default) + "\n"
    with _atomic_open(path, "w") as f:
        f.write(text)


def save_npz_atomic(path: str | os.PathLike, **arrays: Any) -> None:
    """Save ``arrays`` (name -> array-like, jax arrays included) to an uncompressed ``.npz`` atomically.

    The file is written exactly at ``path`` (no ``.npz`` suffix is appended). Read back with ``np.load(path)``.
    """
    np_arrays = {name: np.asarray(value) for name, value in arrays.items()}
    with _atomic_open(path, "wb") as f:
        np.savez(f, **np_arrays)


def save_synthetic(path: str | os.PathLike, images: Any, labels: Any, **metadata: Any) -> None:
    """Write a self-describing ``synthetic.npz`` atomically: :func:`ddjax.data.synthetic_arrays` ``(images, labels,
    pixels=, mean=, std=, zca=, class_names=, dataset=, config=, lr=None)``; read back with
    ``ddjax.load_synthetic(path)``."""
    from ddjax.data.synthetic import synthetic_arrays

    save_npz_atomic(path, **synthetic_arrays(images, labels, **metadata))


# --------------------------------------------------------------------------------------------------------------
# Image grid
# --------------------------------------------------------------------------------------------------------------
def grid_layout(image_hw: tuple[int, int], num_classes: int, ipc: int, *, gap: int = 2, min_cell: int = 32,
                scale: int | None = None) -> dict[str, int]:
    """Geometry of :func:`save_image_grid` (without a label column).

    ``scale = scale or max(1, ceil(min_cell / min(H, W)))`` (integer nearest-neighbour factor), cell
    ``(H*scale, W*scale)``; a ``gap``-pixel border around and between cells, so
    ``width = ipc*cell_w + (ipc+1)*gap`` and ``height = num_classes*cell_h + (num_classes+1)*gap``. The cell of
    (row r, column c) has its top-left corner at ``(gap + r*(cell_h+gap), label_w + gap + c*(cell_w+gap))``.
    """
    h, w = int(image_hw[0]), int(image_hw[1])
    if scale is None:
        scale = max(1, math.ceil(min_cell / max(1, min(h, w))))
    scale = int(scale)
    if scale < 1:
        raise ConfigError(f"image grid scale must be a positive integer, got {scale}; use scale=None for automatic")
    if gap < 0:
        raise ConfigError(f"image grid gap must be >= 0, got {gap}")
    cell_h, cell_w = h * scale, w * scale
    return {
        "scale": scale,
        "cell_h": cell_h,
        "cell_w": cell_w,
        "gap": int(gap),
        "rows": int(num_classes),
        "cols": int(ipc),
        "width": ipc * cell_w + (ipc + 1) * gap,
        "height": num_classes * cell_h + (num_classes + 1) * gap,
    }


def _label_column(names: Sequence[str], gap: int) -> tuple[Any, int]:
    """Return (PIL font, column width in pixels) for the class-name column."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    draw = ImageDraw.Draw(Image.new("L", (1, 1)))
    widest = 0
    for name in names:
        left, _, right, _ = draw.textbbox((0, 0), name, font=font)
        widest = max(widest, right - left)
    return font, widest + 2 * max(gap, 2)


def save_image_grid(path: str | os.PathLike, images: Any, labels: Any, num_classes: int,
                    class_names: Sequence[str] | None = None, *, gap: int = 2, min_cell: int = 32,
                    scale: int | None = None, background: float = 1.0) -> dict[str, int]:
    """Save images as a PNG grid: one row per class (label 0 at the top), images of a class in input order.

    Args:
      images: float ``(N, H, W, C)`` pixels in [0, 1] (values are clipped, NaN drawn as 0), ``C`` 1 (grayscale
        PNG) or 3 (RGB PNG). Use ``Dataset.to_pixels`` first for normalised images.
      labels: int ``(N,)`` in ``[0, num_classes)``, or soft ``(N, num_classes)`` (drawn by their argmax).
      num_classes: number of rows; a class with no image gets an empty row.
      class_names: optional names (one per class) drawn in a label column on the left.
      gap, min_cell, scale: layout, see :func:`grid_layout`; columns = the largest per-class count (at least 1),
        cells of classes with fewer images are left as ``background``.
      background: gap/padding grey level in [0, 1] (1 = white).

    Returns the layout dict of :func:`grid_layout` plus ``label_w`` (0 without class names).
    Written atomically. Pixels are ``round(x * 255)`` upscaled by nearest neighbour (``np.repeat``).
    """
    from PIL import Image, ImageDraw

    images = np.asarray(images, dtype=np.float32)
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[0] == images.shape[0] and np.issubdtype(labels.dtype, np.floating):
        labels = labels.argmax(axis=1)  # soft labels (relabelled sets): drawn in their most likely class's row
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ConfigError(f"save_image_grid needs images of shape (N, H, W, C) with C 1 or 3, got {images.shape}")
    if labels.shape != (images.shape[0],):
        raise ConfigError(f"save_image_grid needs labels of shape ({images.shape[0]},), got {labels.shape}")
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ConfigError(f"labels must lie in [0, {num_classes}), got range [{labels.min()}, {labels.max()}]")
    if class_names is not None and len(class_names) != num_classes:
        raise ConfigError(f"class_names has {len(class_names)} names but num_classes is {num_classes}")
    labels = labels.astype(np.int64)

    n, h, w, c = images.shape
    counts = np.bincount(labels, minlength=num_classes) if n else np.zeros(num_classes, np.int64)
    ipc = max(1, int(counts.max()) if n else 1)
    layout = grid_layout((h, w), num_classes, ipc, gap=gap, min_cell=min_cell, scale=scale)
    s, cell_h, cell_w = layout["scale"], layout["cell_h"], layout["cell_w"]

    names = [str(x) for x in class_names] if class_names is not None else None
    font, label_w = _label_column(names, gap) if names else (None, 0)

    pixels = np.rint(np.clip(np.nan_to_num(images, nan=0.0), 0.0, 1.0) * 255.0).astype(np.uint8)
    bg = int(round(float(np.clip(background, 0.0, 1.0)) * 255))
    canvas = np.full((layout["height"], label_w + layout["width"], c), bg, dtype=np.uint8)
    column = np.zeros(num_classes, dtype=np.int64)
    for i in range(n):  # stable: images of a class keep their input order
        r = int(labels[i])
        col = column[r]
        column[r] += 1
        top = gap + r * (cell_h + gap)
        left = label_w + gap + col * (cell_w + gap)
        cell = np.repeat(np.repeat(pixels[i], s, axis=0), s, axis=1)
        canvas[top:top + cell_h, left:left + cell_w] = cell

    if c == 1:
        img = Image.fromarray(canvas[..., 0], mode="L")
        ink: Any = 0
    else:
        img = Image.fromarray(canvas, mode="RGB")
        ink = (0, 0, 0)
    if names:
        draw = ImageDraw.Draw(img)
        for r, name in enumerate(names):
            top = gap + r * (cell_h + gap)
            _, t, _, b = draw.textbbox((0, 0), name, font=font)
            y = top + (cell_h - (b - t)) // 2 - t
            draw.text((max(gap, 2), y), name, fill=ink, font=font)

    with _atomic_open(path, "wb") as f:
        img.save(f, format="PNG")
    return {**layout, "label_w": label_w}


# --------------------------------------------------------------------------------------------------------------
# Curves
# --------------------------------------------------------------------------------------------------------------
def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of records holding a finite ``key`` (and a ``step``)."""
    steps, values = [], []
    for record in history:
        if "step" not in record or record.get(key) is None:
            continue
        try:
            v = float(record[key])
            st = float(record["step"])
        except (TypeError, ValueError):
            continue
        if math.isfinite(v):
            steps.append(st)
            values.append(v)
    return np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)


def save_curves(path: str | os.PathLike, history: Sequence[Mapping[str, Any]], *, title: str | None = None) -> None:
    """Save a two-panel PNG: training loss vs step, and evaluation accuracy vs step.

    ``history`` is the list of ``metrics.jsonl`` records: each has ``"step"`` and optionally ``"loss"``,
    ``"synthetic_acc"`` (with optional ``"synthetic_acc_std"``, drawn as a band) and ``"random_real_acc"``
    (drawn as a horizontal dashed baseline at its latest value). Missing or non-finite values are skipped. The
    loss axis is logarithmic when every plotted loss is positive. Uses a private Agg canvas (no pyplot, no
    global backend change). Written atomically.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_acc = fig.subplots(1, 2, sharex=True)  # the panels share the step range

    steps, loss = _series(history, "loss")
    if loss.size:
        ax_loss.plot(steps, loss, color="tab:blue", linewidth=1.2, marker="." if loss.size < 50 else None)
        if np.all(loss > 0):
            ax_loss.set_yscale("log")
    else:
        ax_loss.text(0.5, 0.5, "no loss recorded", ha="center", va="center", transform=ax_loss.transAxes)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("distillation loss")
    ax_loss.grid(True, alpha=0.3)

    acc_steps, acc = _series(history, "synthetic_acc")
    plotted = False
    if acc.size:
        ax_acc.plot(acc_steps, acc, color="tab:orange", marker="o", linewidth=1.2, label="synthetic")
        std_steps, std = _series(history, "synthetic_acc_std")
        if std.size:
            # Align std to the accuracy points (records that hold both).
            lookup = dict(zip(std_steps.tolist(), std.tolist()))
            pts = [(s_, a, lookup[s_]) for s_, a in zip(acc_steps.tolist(), acc.tolist()) if s_ in lookup]
            if pts:
                xs, ys, ss = (np.asarray(v) for v in zip(*pts))
                ax_acc.fill_between(xs, ys - ss, ys + ss, color="tab:orange", alpha=0.2, linewidth=0)
        plotted = True
    _, real = _series(history, "random_real_acc")
    if real.size:
        ax_acc.axhline(real[-1], color="tab:gray", linestyle="--", linewidth=1.2,
                       label=f"random real ({real[-1]:.4g})")
        plotted = True
    if plotted:
        ax_acc.legend(loc="best", fontsize="small")
    else:
        ax_acc.text(0.5, 0.5, "no evaluation yet", ha="center", va="center", transform=ax_acc.transAxes)
    ax_acc.set_xlabel("step")
    ax_acc.set_ylabel("test accuracy")
    ax_acc.set_title("evaluation")
    ax_acc.grid(True, alpha=0.3)

    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with _atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")


def _figure(width: float, height: float):
    """A matplotlib Figure on a private Agg canvas (no pyplot, no global backend change)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_heatmap(path: str | os.PathLike, matrix: Any, column_labels: Sequence[str], row_labels: Sequence[str], *,
                 title: str | None = None) -> None:
    """PNG heat map of an accuracy matrix (rows: after each phase, columns: test domains), values written in the
    cells when the matrix is small enough to read them (<= 12 columns). Written atomically."""
    a = np.asarray(matrix, dtype=np.float64)
    if a.ndim != 2 or a.shape != (len(row_labels), len(column_labels)):
        raise ConfigError(f"save_heatmap: matrix of shape {a.shape} does not match {len(row_labels)} row and "
                          f"{len(column_labels)} column labels")
    fig = _figure(max(4.0, 0.6 * a.shape[1] + 2.5), max(3.0, 0.45 * a.shape[0] + 1.5))
    ax = fig.subplots()
    image = ax.imshow(a, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax, label="test accuracy")
    ax.set_xticks(range(a.shape[1]), [str(c) for c in column_labels], rotation=60, ha="right", fontsize="small")
    ax.set_yticks(range(a.shape[0]), [str(r) for r in row_labels], fontsize="small")
    ax.set_xlabel("test domain")
    if a.shape[1] <= 12:
        for (r, c), v in np.ndenumerate(a):
            ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize="x-small",
                    color="white" if v < 0.6 else "black")
    if title:
        ax.set_title(title, fontsize="medium")
    fig.tight_layout()
    with _atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")


def save_accuracy_curve(path: str | os.PathLike, values: Sequence[float], labels: Sequence[str], *,
                        title: str | None = None) -> None:
    """PNG of the average accuracy Aᵗ after each phase t (DIDD Fig. 5). Written atomically."""
    v = np.asarray(values, dtype=np.float64)
    fig = _figure(6.0, 4.0)
    ax = fig.subplots()
    ax.plot(np.arange(1, len(v) + 1), v, marker="o", color="tab:orange")
    ax.set_xticks(np.arange(1, len(v) + 1), [str(x) for x in labels], rotation=60, ha="right", fontsize="small")
    ax.set_xlabel("after domain t")
    ax.set_ylabel("average accuracy $A^t$")
    ax.set_ylim(0.0, 1.0)
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title, fontsize="medium")
    fig.tight_layout()
    with _atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")


# --------------------------------------------------------------------------------------------------------------
# metrics.jsonl
# --------------------------------------------------------------------------------------------------------------
def _parse_metrics(text: str, path: str) -> tuple[list[dict], bool]:
    """Parse JSON lines; returns (records, last_line_was_dropped)."""
    lines = text.split("\n")
    complete = text.endswith("\n")
    if complete:
        lines = lines[:-1]
    records: list[dict] = []
    dropped = False
    for i, line in enumerate(lines):
        last = i == len(lines) - 1
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not an object")
        except ValueError:
            if last:  # a run killed mid-write leaves a partial final line: ignore it
                dropped = True
                continue
            raise CheckpointError(f"{path} line {i + 1} is not a JSON object; delete or repair that line")
        if last and not complete:
            # Parsed, but had no newline: keep it (it is complete JSON) and note it needs a newline.
            dropped = True
        records.append(record)
    return records, dropped


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Read a ``metrics.jsonl`` file into a list of dicts; a missing file gives ``[]``.

    A truncated (unparseable) last line, as left by a run killed mid-write, is skipped; a corrupt line elsewhere
    raises :class:`~ddjax.errors.CheckpointError`.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return _parse_metrics(f.read(), path)[0]


class MetricsWriter:
    """Append-only ``metrics.jsonl`` writer: one JSON object per line, flushed after each line.

    ``MetricsWriter(path, resume_step=N)`` first rewrites the file (atomically) keeping only records with
    ``step <= N`` (records without a step are kept), so a run resumed from the step-``N`` checkpoint re-logs
    steps ``> N`` without duplicates. Without ``resume_step`` an existing file is appended to. Either way a
    truncated last line is removed before appending. Values are converted with :func:`to_jsonable` (numpy/jax
    scalars become ``float``/``int``); non-finite floats are written as ``NaN``/``Infinity``, which
    :func:`read_metrics` (Python's ``json``) reads back.
    """

    def __init__(self, path: str | os.PathLike, resume_step: int | None = None):
        self.path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
            records, damaged = _parse_metrics(text, self.path)
            if resume_step is not None:
                kept = [r for r in records if not _after(r, resume_step)]
                rewrite = damaged or len(kept) != len(records)
            else:
                kept, rewrite = records, damaged
            if rewrite:
                with _atomic_open(self.path, "w") as f:
                    for record in kept:
                        f.write(_dumps(record) + "\n")
        self._file: TextIO | None = open(self.path, "a", encoding="utf-8", newline="\n")

    def write(self, record: Mapping[str, Any] | None = None, **fields: Any) -> dict:
        """Append one record (a dict and/or keyword fields); returns the JSON-ready dict that was written."""
        if self._file is None:
            raise ValueError(f"MetricsWriter for {self.path} is closed")
        merged = {**(dict(record) if record is not None else {}), **fields}
        clean = to_jsonable(merged)
        self._file.write(_dumps(clean) + "\n")
        self._file.flush()
        return clean

    __call__ = write

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "MetricsWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _after(record: Mapping[str, Any], step: int) -> bool:
    try:
        return "step" in record and float(record["step"]) > step
    except (TypeError, ValueError):
        return False


def _dumps(record: Any) -> str:
    return json.dumps(record, default=_json_default, separators=(", ", ": "))


# --------------------------------------------------------------------------------------------------------------
# Progress
# --------------------------------------------------------------------------------------------------------------
def format_duration(seconds: float) -> str:
    """``H:MM:SS`` (hours unbounded); ``?`` for unknown/non-finite."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


def _format_scalar(value: Any) -> str:
    value = to_jsonable(value)
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.3e}"
    return str(value)


class Progress:
    """Dependency-free progress reporting for the step loop.

    On a terminal (``stream.isatty()``) a single bar is redrawn in place with ``\\r`` (at most every
    ``min_interval`` seconds, and always on ``force=True`` or the last step); otherwise plain lines such as
    ``step 120/1000  loss 1.234e+00  12.3 it/s  eta 0:01:11`` are printed every ``log_every`` steps
    (default ``max(1, total // 20)``), on ``force=True`` and at the last step.

    The rate is measured from the FIRST ``update`` call (whose step usually includes jit compilation), i.e.
    ``(step - first_step) / (now - first_time)``; until a second update it is unknown (``? it/s  eta ?``).
    The first update is always shown (it marks the end of compilation).
    ``initial`` is the starting step (e.g. after a resume). ``clock`` is injectable for tests.
    """

    def __init__(self, total: int, initial: int = 0, stream: TextIO | None = None, *, log_every: int | None = None,
                 desc: str = "", width: int = 24, min_interval: float = 0.1,
                 clock: Callable[[], float] = time.monotonic):
        self.total = int(total)
        self.step = int(initial)
        self.stream = sys.stderr if stream is None else stream
        isatty = getattr(self.stream, "isatty", None)
        try:
            self.tty = bool(isatty()) if callable(isatty) else False
        except (ValueError, OSError):
            self.tty = False
        self.log_every = max(1, int(log_every) if log_every else max(1, self.total // 20))
        self.desc = desc
        self.width = width
        self.min_interval = min_interval
        self._clock = clock
        self._start = clock()
        self._first: tuple[int, float] | None = None  # (step, time) of the first update
        self._last_logged = int(initial)
        self._last_draw = -math.inf
        self._last_len = 0
        self._scalars: dict[str, Any] = {}
        self._pending = False  # an update that was not printed yet
        self._closed = False

    # ---- rate / eta ---------------------------------------------------------------------------------------
    def rate(self) -> float | None:
        """Steps per second since the first update, or None when not measurable yet."""
        if self._first is None:
            return None
        step0, t0 = self._first
        dt = self._clock() - t0
        if self.step <= step0 or dt <= 0:
            return None
        return (self.step - step0) / dt

    def eta(self) -> float | None:
        """Estimated seconds to ``total``, or None."""
        r = self.rate()
        if r is None:
            return None
        return max(0, self.total - self.step) / r

    def _text(self) -> str:
        r = self.rate()
        parts = [f"step {self.step}/{self.total}"]
        parts += [f"{k} {_format_scalar(v)}" for k, v in self._scalars.items()]
        parts.append(f"{r:.1f} it/s" if r is not None else "? it/s")
        parts.append(f"eta {format_duration(self.eta()) if r is not None else '?'}")
        return "  ".join(parts)

    # ---- public -------------------------------------------------------------------------------------------
    def update(self, step: int, force: bool = False, **scalars: Any) -> None:
        """Record that ``step`` steps are done (absolute, not an increment) with optional scalars to show."""
        if self._closed:
            return
        self.step = int(step)
        if self._first is None:  # shown at once: it tells the user the first (compiling) step is done
            self._first = (self.step, self._clock())
            force = True
        if scalars:
            self._scalars.update(scalars)
        done = self.step >= self.total
        if self.tty:
            now = self._clock()
            if force or done or now - self._last_draw >= self.min_interval:
                self._draw()
                self._last_draw = now
                self._pending = False
            else:
                self._pending = True
        else:
            if force or done or self.step - self._last_logged >= self.log_every:
                self._log()
            else:
                self._pending = True

    def write(self, message: str) -> None:
        """Print a message line without corrupting the bar (the bar is redrawn after it on a terminal)."""
        if self.tty and self._last_len:
            self.stream.write("\r" + " " * self._last_len + "\r")
            self._last_len = 0
        self.stream.write(message.rstrip("\n") + "\n")
        if self.tty and self._first is not None:
            self._draw()
            self._last_draw = self._clock()
            self._pending = False
        self.stream.flush()

    def close(self) -> None:
        """Finish: draw/log the latest state if not shown yet and end the bar's line (idempotent)."""
        if self._closed:
            return
        if self.tty:
            if self._pending or (self._last_len == 0 and self._first is not None):
                self._draw()
            if self._last_len:
                self.stream.write("\n")
        elif self._pending:
            self._log()
        self.stream.flush()
        self._closed = True

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- rendering ----------------------------------------------------------------------------------------
    def _log(self) -> None:
        prefix = f"{self.desc}  " if self.desc else ""
        self.stream.write(prefix + self._text() + "\n")
        self.stream.flush()
        self._last_logged = self.step
        self._pending = False

    def _draw(self) -> None:
        frac = min(1.0, max(0.0, self.step / self.total)) if self.total > 0 else 1.0
        filled = int(round(frac * self.width))
        bar = "#" * filled + "-" * (self.width - filled)
        prefix = f"{self.desc} " if self.desc else ""
        line = f"{prefix}[{bar}] {100 * frac:3.0f}%  {self._text()}"
        pad = max(0, self._last_len - len(line))
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self._last_len = len(line)
