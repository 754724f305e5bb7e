"""Domain collections: an ordered list of domains sharing one label space, each with a train and a test split.

A :class:`DomainCollection` holds no domain's arrays: :meth:`DomainCollection.load` builds (or reads) ONE domain's
split and returns it as a :class:`~ddjax.data.Dataset`, so a stream of 20 rotated Fashion-MNIST domains never holds
more than the domains a phase needs. Every domain is normalised with the SAME per-channel ``mean``/``std`` (pixel
scale [0, 1]), so one synthetic set lives in one model space across all of them and
:meth:`~ddjax.data.Dataset.to_pixels` draws any domain's images alike.

Sources (:func:`load_domains`):

* ``rotated``: rotated copies of a base dataset (``digits``: R-digits, ``fashion_mnist``: R-FMNIST). Domain ``k``
  (0-based) is every image of the base dataset rotated counter-clockwise by ``k * angle_step`` degrees (bilinear,
  zero fill, about the image centre); its train/test split is the base dataset's. DIDD's R-MNIST (§5.1.1,
  Table 4): 20 domains, each all of MNIST (60,000 / 10,000) at "a domain specific angle that increases across
  domains". The paper gives no step; 9° (= 180° / 20, the range of the R-MNIST of Shi & Wang 2023, whose
  Seq-CORe50 DIDD uses) is the default. MNIST is not available offline: R-FMNIST stands in for R-MNIST.
  Normalisation: the base dataset's train statistics (rotation only moves pixels, and R-MNIST code uses MNIST's
  fixed constants for every angle).
* ``styled``: the offline stand-in for PACS (issue 13): the base dataset's classes rendered in four clearly
  different RGB styles, in PACS's order ``photo`` (the shape in a random colour over a textured, coloured
  background), ``art`` (tinted canvas with brush-stroke texture), ``cartoon`` (posterised flat colours with a
  dark outline) and ``sketch`` (dark edge strokes on white paper). Built from the base dataset's train/test split
  with numpy, deterministically (per-image colours and textures from a generator seeded by domain and split).
  Pictures: ``docs/images/styled_digits.png``, ``docs/images/styled_fashion_mnist.png``.
* ``folder``: DomainBed-layout folders on disk, ``root/<domain>/<class>/*.png|jpg|jpeg`` (PACS, VLCS,
  Office-Home, TerraIncognita, Seq-CORe50). Domains and classes are sorted folder names (classes must be the same
  in every domain); images are read as RGB and resized to ``image_size`` (default 32) with PIL's bilinear filter;
  each domain is split 8:2 as DomainBed's ``split_dataset``: the domain's files in ImageFolder order (sorted
  classes, sorted file names) shuffled by ``RandomState(seed_hash(split_seed, domain name))``, the first
  ``int(0.2 n)`` are the test ("out") split, the rest train ("in").

``styled`` and ``folder`` are normalised with DomainBed's constants (the ImageNet statistics, mean
(0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)): fixed numbers, so no domain's data (a held-out domain's least of
all) enters the preprocessing of another.

Order: ``names`` picks and orders a subset (default: every domain, ``num_domains`` of them for ``rotated``), then
``order="random"`` permutes that list with ``numpy.random.RandomState(order_seed)`` (DIDD Table 5's random orders).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from typing import Callable, NamedTuple, Sequence

import numpy as np

from ddjax.data import dataset as _dataset
from ddjax.data import digits as _digits
from ddjax.data import preprocess as _pre
from ddjax.data import tfds_sources as _tfds
from ddjax.errors import ConfigError, DataNotFoundError, check_choice

__all__ = ["DOMAIN_SOURCES", "DOMAIN_ORDERS", "STYLE_NAMES", "IMAGENET_MEAN", "IMAGENET_STD", "DomainCollection", "collection_from_config",
           "load_domains", "rotate_images", "stylize", "train_subset", "test_subset", "domainbed_split",
           "parse_names"]

DOMAIN_SOURCES = ("rotated", "styled", "folder")
DOMAIN_ORDERS = ("default", "random")
STYLE_NAMES = ("photo", "art", "cartoon", "sketch")   # PACS's order
BASE_NAMES = ("digits", "fashion_mnist")
IMAGENET_MEAN = np.asarray([0.485, 0.456, 0.406], np.float32)   # DomainBed's transforms.Normalize
IMAGENET_STD = np.asarray([0.229, 0.224, 0.225], np.float32)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
HOLDOUT_FRACTION = 0.2                                # DomainBed's default --holdout_fraction
DEFAULT_ROTATED_DOMAINS = 20
DEFAULT_FOLDER_SIZE = 32

Splits = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]   # train_x, train_y, test_x, test_y; x in [0, 1]


@dataclasses.dataclass(frozen=True, eq=False)
class DomainCollection:
    """Domains in stream order, one label space, one normalisation; arrays built on demand by :meth:`load`.

    ``mean``/``std``: per-channel, pixel scale [0, 1], shared by every domain; ``statistics`` says which numbers
    they are. ``eq=False``: compared by identity.
    """
    name: str
    domains: tuple[str, ...]
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]
    mean: np.ndarray
    std: np.ndarray
    statistics: str
    builder: Callable[[str, bool], Splits] = dataclasses.field(repr=False)   # (domain, with_train) -> splits
    test_per_class: int = 0   # > 0: every domain's test split keeps the first n images of each class (test_subset)

    @property
    def num_domains(self) -> int:
        return len(self.domains)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.domains)

    def index(self, domain: str) -> int:
        """Stream position of ``domain``; ConfigError listing the domains if unknown."""
        return self.domains.index(check_choice(f"domain of {self.name}", domain, self.domains))

    def load(self, i: int) -> _dataset.Dataset:
        """Domain ``i`` (stream position, 0-based) as a normalised :class:`Dataset` named ``<collection>/<domain>``."""
        return self.load_many((i,))

    def load_many(self, indices: Sequence[int]) -> _dataset.Dataset:
        """The union of the domains ``indices`` (train with train, test with test, in the given order), one Dataset.

        Each domain is built and normalised in turn; only the concatenation is kept.
        """
        indices = tuple(int(i) for i in indices)
        if not indices or any(not 0 <= i < self.num_domains for i in indices):
            raise ConfigError(f"domain indices {list(indices)} out of range for {self.name}'s {self.num_domains} "
                              "domains; pass positions 0..num_domains-1")
        parts = [self._normalised(i, True) for i in indices]
        joined = [np.concatenate([p[j] for p in parts]) if len(parts) > 1 else parts[0][j] for j in range(4)]
        name = f"{self.name}/{'+'.join(self.domains[i] for i in indices)}"
        return _dataset.Dataset(name=name, train_images=joined[0], train_labels=joined[1], test_images=joined[2],
                                test_labels=joined[3], num_classes=self.num_classes, class_names=self.class_names,
                                mean=self.mean, std=self.std, zca=None)

    def load_test(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Domain ``i``'s normalised test split ``(images, labels)`` only (its train split is not built)."""
        if not 0 <= int(i) < self.num_domains:
            raise ConfigError(f"domain index {i} out of range for {self.name}'s {self.num_domains} domains")
        _, _, test_x, test_y = self._normalised(int(i), False)
        return test_x, test_y

    def _normalised(self, i: int, with_train: bool) -> Splits:
        domain = self.domains[i]
        train_x, train_y, test_x, test_y = self.builder(domain, with_train)
        if self.test_per_class:
            keep = test_subset(test_y, self.test_per_class)
            test_x, test_y = test_x[keep], test_y[keep]
        norm = functools.partial(_pre.normalize, mean=self.mean, std=self.std)
        if not with_train:
            return None, None, np.ascontiguousarray(norm(test_x), np.float32), test_y.astype(np.int32)
        counts = np.bincount(train_y, minlength=self.num_classes)
        if (counts == 0).any():
            empty = [self.class_names[c] for c in np.flatnonzero(counts == 0)]
            raise DataNotFoundError(f"domain {domain!r} of {self.name} has no training image of class(es) "
                                    f"{', '.join(empty)}; every domain needs every class (add images or drop the "
                                    "domain with --config.domains.names)")
        return (np.ascontiguousarray(norm(train_x), np.float32), train_y.astype(np.int32),
                np.ascontiguousarray(norm(test_x), np.float32), test_y.astype(np.int32))


# ----------------------------------------------------------------------------------------------- pure transforms
def test_subset(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Indices (ascending) of the first ``per_class`` images of every class in split order (all of a smaller
    class): the deterministic, class-balanced test subset of ``config.domains.test_per_class``."""
    labels = np.asarray(labels)
    keep = [np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(keep))


def _bilinear_sample(images: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """``images`` (N, H, W[, C]) sampled at float coordinates ``ys``, ``xs`` (H', W'); zero outside the image."""
    h, w = images.shape[1:3]
    y0, x0 = np.floor(ys).astype(np.int64), np.floor(xs).astype(np.int64)
    out = np.zeros(images.shape[:1] + ys.shape + images.shape[3:], np.float64)
    for dy in (0, 1):
        for dx in (0, 1):
            yi, xi = y0 + dy, x0 + dx
            weight = (1.0 - np.abs(ys - yi)) * (1.0 - np.abs(xs - xi))
            inside = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
            weight = np.where(inside, weight, 0.0)
            picked = images[:, np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)]
            out += picked * weight.reshape(weight.shape + (1,) * (images.ndim - 3))
    return out


def rotate_images(images: np.ndarray, degrees: float) -> np.ndarray:
    r"""Rotate NHWC images counter-clockwise by ``degrees`` about the centre, bilinear, zero fill.

    Output pixel :math:`(y, x)` reads the input at :math:`u = c\,u' + s\,v'`, :math:`v = -s\,u' + c\,v'` with
    :math:`u' = x - c_x`, :math:`v' = c_y - y` (up), :math:`c, s = \cos\theta, \sin\theta`; then
    :math:`x_{in} = u + c_x`, :math:`y_{in} = c_y - v`. A multiple of 90° on a square image equals ``np.rot90``.
    """
    x = np.asarray(images)
    h, w = x.shape[1:3]
    theta = np.deg2rad(float(degrees))
    cos, sin = np.cos(theta), np.sin(theta)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    u_out, v_out = xx - cx, cy - yy
    u_in, v_in = cos * u_out + sin * v_out, -sin * u_out + cos * v_out
    xs, ys = np.round(u_in + cx, 9), np.round(cy - v_in, 9)   # rounding: exact grid points stay exact
    return _bilinear_sample(x, ys, xs).astype(np.float32)


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """NHWC float images to ``size`` x ``size`` (jax.image linear, antialiased when shrinking)."""
    if images.shape[1:3] == (size, size):
        return images
    import jax.image

    out = jax.image.resize(images, (images.shape[0], size, size, images.shape[3]), method="linear", antialias=True)
    return np.clip(np.asarray(out, np.float32), 0.0, 1.0)


def _smooth_noise(rng: np.random.Generator, n: int, hw: tuple[int, int], cells: int, channels: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a ``cells`` x ``cells`` random grid per image, bilinearly upsampled."""
    grid = rng.random((n, cells, cells, channels))
    ys = np.linspace(0.0, cells - 1.0, hw[0])[:, None] * np.ones((1, hw[1]))
    xs = np.linspace(0.0, cells - 1.0, hw[1])[None, :] * np.ones((hw[0], 1))
    return _bilinear_sample(grid, ys, xs)


def _edges(gray: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of (N, H, W) images (edge padding), each image scaled to max 1."""
    p = np.pad(gray, ((0, 0), (1, 1), (1, 1)), mode="edge")
    gx = (p[:, :-2, 2:] + 2 * p[:, 1:-1, 2:] + p[:, 2:, 2:]) - (p[:, :-2, :-2] + 2 * p[:, 1:-1, :-2] + p[:, 2:, :-2])
    gy = (p[:, 2:, :-2] + 2 * p[:, 2:, 1:-1] + p[:, 2:, 2:]) - (p[:, :-2, :-2] + 2 * p[:, :-2, 1:-1] + p[:, :-2, 2:])
    mag = np.hypot(gx, gy)
    return mag / np.maximum(mag.max(axis=(1, 2), keepdims=True), 1e-8)


def _outer_boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels outside a boolean (N, H, W) mask with a 4-neighbour inside it."""
    p = np.pad(mask, ((0, 0), (1, 1), (1, 1)))
    near = p[:, :-2, 1:-1] | p[:, 2:, 1:-1] | p[:, 1:-1, :-2] | p[:, 1:-1, 2:]
    return near & ~mask


_PALETTE = np.asarray([[0.90, 0.10, 0.10], [0.10, 0.45, 0.90], [0.10, 0.70, 0.20], [0.95, 0.75, 0.05],
                       [0.60, 0.15, 0.75], [0.95, 0.45, 0.05]], np.float64)   # cartoon's flat colours


def stylize(gray: np.ndarray, style: str, rng: np.random.Generator) -> np.ndarray:
    """Render grayscale shapes ``gray`` (N, H, W) in [0, 1] (1 = ink) in ``style``; float32 RGB (N, H, W, 3).

    * photo: ``bg·(1 − g) + fg·g``; ``bg`` a smooth two-colour field (4x4-cell noise) with fine grain, ``fg`` a
      random colour at least 0.5 away from the background's mean in some channel.
    * art: a random tint times a canvas texture (oriented sinusoidal brush strokes + 3x3-cell noise), the shape
      laid on as darker paint of a second tint: ``canvas·(1 − 0.75 g) + 0.75 g·paint``.
    * cartoon: the shape thresholded at 0.2 in a flat palette colour (two tones: darker where ``g < 0.6``) on a
      flat light colour, posterised to 4 levels, a dark outline just outside the shape (images >= 16 pixels).
    * sketch: ``1 − edges`` (Sobel magnitude of the shape) with light paper noise, gray in all three channels.
    """
    check_choice("style", style, STYLE_NAMES)
    g = np.asarray(gray, np.float64)
    n, h, w = g.shape
    gc = g[..., None]
    if style == "photo":
        field = _smooth_noise(rng, n, (h, w), 4, 1)
        c1, c2 = rng.random((n, 1, 1, 3)), rng.random((n, 1, 1, 3))
        bg = c1 * field + c2 * (1.0 - field) + 0.04 * rng.standard_normal((n, h, w, 3))
        fg = rng.random((n, 1, 1, 3))
        far = np.abs(fg - bg.mean(axis=(1, 2), keepdims=True)).max(axis=-1, keepdims=True) >= 0.5
        fg = np.where(far, fg, 1.0 - np.round(bg.mean(axis=(1, 2), keepdims=True)))   # else the opposite corner
        out = bg * (1.0 - gc) + fg * gc
    elif style == "art":
        angle = rng.uniform(0.0, np.pi, (n, 1, 1))
        freq = rng.uniform(0.8, 1.6, (n, 1, 1))
        yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        strokes = 0.5 + 0.5 * np.sin(freq * (xx * np.cos(angle) + yy * np.sin(angle)))
        texture = 0.55 + 0.25 * strokes[..., None] + 0.2 * _smooth_noise(rng, n, (h, w), 3, 1)
        tint = 0.45 + 0.55 * rng.random((n, 1, 1, 3))
        paint = 0.6 * rng.random((n, 1, 1, 3))
        out = tint * texture * (1.0 - 0.75 * gc) + 0.75 * gc * paint
    elif style == "cartoon":
        mask = g >= 0.2
        fg = _PALETTE[rng.integers(0, len(_PALETTE), n)][:, None, None, :]
        shade = np.where(g >= 0.6, 1.0, 0.7)[..., None]          # two flat tones inside the shape
        bg = 0.75 + 0.25 * rng.random((n, 1, 1, 3))
        out = np.round(np.where(mask[..., None], fg * shade, bg) * 3.0) / 3.0
        if min(h, w) >= 16:   # an 8x8 digit has no room for an outline: it would swallow the strokes
            out = np.where(_outer_boundary(mask)[..., None], 0.08, out)
    else:  # sketch
        strokes = np.clip(1.0 - 1.2 * _edges(g), 0.0, 1.0)
        paper = strokes - 0.05 * rng.random((n, h, w))
        out = np.repeat(paper[..., None], 3, axis=-1)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def seed_hash(*args) -> int:
    """DomainBed's ``misc.seed_hash``: an int in [0, 2^31) from the MD5 of the arguments' string."""
    return int(hashlib.md5(str(args).encode("utf-8")).hexdigest(), 16) % (2 ** 31)


def domainbed_split(n: int, seed: int, holdout_fraction: float = HOLDOUT_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """DomainBed's ``split_dataset``: ``(train "in" indices, test "out" indices)``; the first
    ``int(n * holdout_fraction)`` of ``RandomState(seed).shuffle(range(n))`` are held out."""
    keys = list(range(n))
    np.random.RandomState(seed).shuffle(keys)
    cut = int(n * holdout_fraction)
    return np.asarray(keys[cut:], np.int64), np.asarray(keys[:cut], np.int64)


def parse_names(names: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"photo,art"`` or ``("photo", "art")`` → ``("photo", "art")``; empty / None → ``()``."""
    if names is None:
        return ()
    items = names.split(",") if isinstance(names, str) else list(names)
    return tuple(s.strip() for s in items if str(s).strip())


# ----------------------------------------------------------------------------------------------------- sources
def _base_arrays(base: str, data_dir, source_dir) -> tuple[Splits, tuple[str, ...]]:
    """The base dataset as (N, H, W) grayscale in [0, 1] plus labels, and its class names."""
    check_choice("domains.base dataset", base, BASE_NAMES)
    if base == "digits":
        train_x, train_y, test_x, test_y = _digits.load_digits_arrays()
        return (train_x[..., 0], train_y, test_x[..., 0], test_y), _digits.DIGITS_CLASS_NAMES
    raw = _tfds.load_fashion_mnist_arrays(data_dir, source_dir)
    unit = lambda a: a[..., 0].astype(np.float32) / np.float32(255.0)  # noqa: E731
    return (unit(raw.train_images), raw.train_labels, unit(raw.test_images), raw.test_labels), raw.class_names


class _Source(NamedTuple):
    """What a source gives :func:`load_domains`: domain name → builder of its (unnormalised) splits, and the rest."""
    name: str
    builders: dict[str, Callable[[bool], Splits]]
    classes: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    statistics: str
    image_shape: tuple[int, int, int]


def _rotated(base: str, num_domains: int | None, angle_step: float, image_size: int | None, data_dir,
             source_dir) -> _Source:
    num_domains = DEFAULT_ROTATED_DOMAINS if num_domains is None else int(num_domains)
    if num_domains < 1:
        raise ConfigError(f"domains.num_domains must be >= 1 for rotated domains, got {num_domains}")
    if not np.isfinite(angle_step) or angle_step <= 0:
        raise ConfigError(f"domains.angle_step must be a positive number of degrees, got {angle_step}; DIDD: 9")
    (train_x, train_y, test_x, test_y), class_names = _base_arrays(base, data_dir, source_dir)
    if image_size:
        train_x = _resize(train_x[..., None], image_size)[..., 0]
        test_x = _resize(test_x[..., None], image_size)[..., 0]
    mean, std = _pre.channel_stats(train_x[..., None])
    std = np.where(std > 0, std, np.float32(1.0)).astype(np.float32)

    def build(angle: float, with_train: bool) -> Splits:
        train = rotate_images(train_x[..., None], angle) if with_train else None
        return train, train_y, rotate_images(test_x[..., None], angle), test_y

    builders = {f"rot{k * angle_step:g}": functools.partial(build, k * angle_step) for k in range(num_domains)}
    return _Source(f"rotated_{base}", builders, class_names, mean, std, f"the train statistics of unrotated {base}",
                   (*train_x.shape[1:3], 1))


def train_subset(labels: np.ndarray, per_domain: int, index: int) -> np.ndarray:
    """Sorted rows of a base train split kept for styled domain ``index`` when ``per_domain`` (> 0) caps it: the
    same number from every class (``per_domain // K``, the rest to the first classes), drawn without replacement
    by ``default_rng([1729, index, 2])``, so the domains hold different base images (as PACS's domains do)."""
    classes = np.unique(labels)
    rng = np.random.default_rng([1729, index, 2])
    share, extra = divmod(int(per_domain), len(classes))
    rows = []
    for j, c in enumerate(classes):
        pool = np.flatnonzero(labels == c)
        want = share + (1 if j < extra else 0)
        if want > len(pool):
            raise ConfigError(f"domains.train_per_domain={per_domain} asks {want} images of class {c} but the base "
                              f"train split has {len(pool)}; lower it (0: the whole split)")
        rows.append(rng.choice(pool, want, replace=False))
    return np.sort(np.concatenate(rows))


def _styled(base: str, image_size: int | None, data_dir, source_dir, train_per_domain: int = 0) -> _Source:
    (train_x, train_y, test_x, test_y), class_names = _base_arrays(base, data_dir, source_dir)
    if image_size:
        train_x = _resize(train_x[..., None], image_size)[..., 0]
        test_x = _resize(test_x[..., None], image_size)[..., 0]
    if train_per_domain and train_per_domain < len(class_names):
        raise ConfigError(f"domains.train_per_domain={train_per_domain} is below one image per class "
                          f"({len(class_names)} classes); use >= {len(class_names)} or 0 for the whole split")

    def build(index: int, style: str, with_train: bool) -> Splits:
        def one(split: int, gray: np.ndarray) -> np.ndarray:
            return stylize(gray, style, np.random.default_rng([1729, index, split]))
        if not with_train:
            return None, train_y, one(1, test_x), test_y
        rows = train_subset(train_y, train_per_domain, index) if train_per_domain else slice(None)
        return one(0, train_x[rows]), train_y[rows], one(1, test_x), test_y

    builders = {style: functools.partial(build, i, style) for i, style in enumerate(STYLE_NAMES)}
    return _Source(f"styled_{base}", builders, class_names, IMAGENET_MEAN, IMAGENET_STD,
                   "DomainBed's ImageNet constants", (*train_x.shape[1:3], 3))


def _list_images(folder: str) -> list[str]:
    return sorted(f for f in os.listdir(folder)
                  if f.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(os.path.join(folder, f)))


def _folder(root: str, image_size: int | None, split_seed: int) -> _Source:
    if not root:
        raise ConfigError("domains.root is empty; set --config.domains.root=DIR holding DIR/<domain>/<class>/*.png")
    root = os.path.abspath(os.path.expanduser(root))
    if not os.path.isdir(root):
        raise DataNotFoundError(f"domain folder {root} does not exist; download the dataset (e.g. DomainBed's "
                                "download script) and point --config.domains.root at the folder holding its domains")
    domains = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    if not domains:
        raise DataNotFoundError(f"{root} has no domain folders; expected {root}/<domain>/<class>/*.png|jpg")
    classes = None
    for d in domains:
        found = tuple(sorted(c for c in os.listdir(os.path.join(root, d))
                             if os.path.isdir(os.path.join(root, d, c)) and not c.startswith(".")))
        if classes is None:
            classes, first = found, d
        elif found != classes:
            extra, missing = sorted(set(found) - set(classes)), sorted(set(classes) - set(found))
            raise ConfigError(f"class folders of domain {d!r} differ from those of {first!r} (extra: "
                              f"{', '.join(extra) or '-'}; missing: {', '.join(missing) or '-'}); every domain needs "
                              "the same class folders")
    if not classes:
        raise DataNotFoundError(f"domain {domains[0]!r} in {root} has no class folders; expected "
                                f"{root}/<domain>/<class>/*.png|jpg")
    size = DEFAULT_FOLDER_SIZE if not image_size else int(image_size)

    def build(domain: str, with_train: bool) -> Splits:
        from PIL import Image

        paths, labels = [], []
        for c, name in enumerate(classes):
            files = _list_images(os.path.join(root, domain, name))
            if not files:
                raise DataNotFoundError(f"class folder {os.path.join(root, domain, name)} has no .png/.jpg image; "
                                        "every class needs images in every domain")
            paths += [os.path.join(root, domain, name, f) for f in files]
            labels += [c] * len(files)
        labels = np.asarray(labels, np.int32)
        train, test = domainbed_split(len(paths), seed_hash(split_seed, domain))

        def read(rows: np.ndarray) -> np.ndarray:
            images = np.empty((len(rows), size, size, 3), np.float32)
            for j, row in enumerate(rows):
                with Image.open(paths[row]) as im:
                    rgb = im.convert("RGB").resize((size, size), Image.BILINEAR)
                    images[j] = np.asarray(rgb, np.float32) / 255.0
            return images
        return read(train) if with_train else None, labels[train], read(test), labels[test]

    builders = {d: functools.partial(build, d) for d in domains}
    name = f"folder_{os.path.basename(root.rstrip(os.sep)) or 'root'}"
    return _Source(name, builders, classes, IMAGENET_MEAN, IMAGENET_STD, "DomainBed's ImageNet constants",
                   (size, size, 3))


def load_domains(source: str, *, base: str = "digits", num_domains: int | None = None, angle_step: float = 9.0,
                 root: str | None = None, names: str | Sequence[str] | None = None, order: str = "default",
                 order_seed: int = 0, image_size: int | None = None, split_seed: int = 0, train_per_domain: int = 0,
                 test_per_class: int = 0, data_dir: str | os.PathLike | None = None,
                 source_dir: str | os.PathLike | None = None) -> DomainCollection:
    """A :class:`DomainCollection` from ``source`` (see the module docstring for each source and its statistics).

    Args:
      source: ``rotated`` | ``styled`` | ``folder``.
      base: the dataset rotated or styled (``digits`` | ``fashion_mnist``).
      num_domains: ``rotated``: how many angles (default 20); others: keep the first ``num_domains`` after
        ``names`` and ``order`` (None: all).
      angle_step: degrees between consecutive rotated domains (default 9).
      root: ``folder``: the folder holding ``<domain>/<class>/`` folders.
      names: a subset of domain names in the wanted order (comma string or sequence); None/empty: all.
      order: ``default`` or ``random`` (a ``RandomState(order_seed)`` permutation of the chosen domains).
      image_size: side of the square images; None/0: the base size (``rotated``/``styled``), 32 (``folder``).
      split_seed: ``folder``: DomainBed's trial seed of the 8:2 split.
      train_per_domain: ``styled``: keep this many train images per domain, class-balanced, a different seeded
        subset of the base train split per domain (:func:`train_subset`); 0: the whole split. The test splits
        are always whole.
      test_per_class: > 0: every domain's test split keeps the first n images of each class (:func:`test_subset`);
        0: the whole split.
      data_dir, source_dir: where ``fashion_mnist`` is prepared / its IDX files (see :func:`load_dataset`).

    Raises:
      ConfigError: unknown source, base, order or domain name, a repeated name, mismatched class folders, bad sizes.
      DataNotFoundError: a missing folder, or a class without images in a domain.
    """
    check_choice("domains.source", source, DOMAIN_SOURCES)
    check_choice("domains.order", order, DOMAIN_ORDERS)
    if image_size is not None and (isinstance(image_size, bool) or int(image_size) < 0):
        raise ConfigError(f"domains.image_size must be >= 0 (0: the source's size), got {image_size}")
    image_size = int(image_size) if image_size else None
    if source == "rotated":
        src = _rotated(base, num_domains, float(angle_step), image_size, data_dir, source_dir)
    elif source == "styled":
        src = _styled(base, image_size, data_dir, source_dir, int(train_per_domain or 0))
    else:
        src = _folder(root or "", image_size, int(split_seed))
    name, available = src.name, tuple(src.builders)
    chosen = parse_names(names) or available
    for d in chosen:
        check_choice(f"domain of {name}", d, available)
    if len(set(chosen)) != len(chosen):
        raise ConfigError(f"domains.names repeats a domain ({', '.join(chosen)}); list each domain once")
    if order == "random":
        chosen = tuple(chosen[i] for i in np.random.RandomState(int(order_seed)).permutation(len(chosen)))
    if num_domains is not None and source != "rotated":
        if not 1 <= int(num_domains) <= len(chosen):
            raise ConfigError(f"domains.num_domains={num_domains} but {name} has {len(chosen)} domain(s) to choose "
                              f"from ({', '.join(chosen)}); use 1..{len(chosen)} or 0 for all")
        chosen = chosen[:int(num_domains)]
    return DomainCollection(name=src.name, domains=tuple(chosen), class_names=tuple(str(c) for c in src.classes),
                            image_shape=src.image_shape, mean=np.asarray(src.mean, np.float32),
                            std=np.asarray(src.std, np.float32), statistics=src.statistics,
                            builder=lambda d, with_train: src.builders[d](with_train),
                            test_per_class=int(test_per_class or 0))


def collection_from_config(config) -> DomainCollection:
    """:func:`load_domains` with a run config's ``config.domains`` (``fashion_mnist`` read through ``config.data``'s
    ``data_dir``/``source_dir``); 0 means "the source's default" for ``num_domains`` and ``image_size``.

    The one reading of ``config.domains`` for the library (``ddjax.algorithms.decoupled``) and the launcher
    (``launch.domains`` re-exports it)."""
    d = config.domains
    return load_domains(d.source, base=d.base, num_domains=d.num_domains or None, angle_step=d.angle_step,
                        root=d.root or None, names=d.names, order=d.order, order_seed=d.order_seed,
                        image_size=d.image_size or None, split_seed=d.split_seed,
                        train_per_domain=d.get("train_per_domain", 0), test_per_class=d.get("test_per_class", 0),
                        data_dir=config.data.data_dir, source_dir=config.data.source_dir)
