"""Benchmark ddjax's jitted k-means against scikit-learn's KMeans on the same features; one JSON line per case.

    python benchmarks/bench_kmeans.py --n=6000 --d=2048 --k=128 --classes=1
    python benchmarks/bench_kmeans.py --features=digits --k=10

``--features=blobs``: ``n`` points in ``d`` dimensions around ``k`` Gaussian centres (DREAM's per-class setting on
Fashion-MNIST is n=6000 ConvNet-3 embeddings, d=2048, k=128); ``digits``: the embedded digits' 64 pixels, one
class per ``--classes``. ddjax runs ``classes`` problems as one vmapped program; scikit-learn runs them one after
another (``n_init=1``, ``max_iter``, ``tol`` equal, Lloyd). Reports median seconds of each, their ratio, the mean
inertia of each, XLA FLOPs (a while-loop body counted once) and temporary memory.
"""
from __future__ import annotations

import json
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from common import xla_analysis

from ddjax import cluster, data

flags.DEFINE_enum("features", "blobs", ["blobs", "digits"], "Which features to cluster.")
flags.DEFINE_integer("n", 6000, "blobs: points per class.")
flags.DEFINE_integer("d", 2048, "blobs: dimensions.")
flags.DEFINE_integer("k", 128, "Clusters.")
flags.DEFINE_integer("classes", 1, "Independent problems (vmapped in ddjax).")
flags.DEFINE_integer("max_iter", 100, "Lloyd iteration budget.")
flags.DEFINE_float("tol", 1e-4, "Tolerance (scikit-learn's definition).")
flags.DEFINE_integer("repeats", 3, "Timed calls after one warm-up.")
FLAGS = flags.FLAGS


def _features() -> np.ndarray:
    if FLAGS.features == "digits":
        ds = data.load_dataset("digits")
        n = min(int((ds.train_labels == c).sum()) for c in range(FLAGS.classes))
        return np.stack([ds.train_images[ds.train_labels == c][:n].reshape(n, -1) for c in range(FLAGS.classes)])
    rng = np.random.default_rng(0)
    out = []
    for _ in range(FLAGS.classes):
        centres = rng.normal(size=(FLAGS.k, FLAGS.d))
        out.append(centres[rng.integers(0, FLAGS.k, FLAGS.n)] + 0.5 * rng.normal(size=(FLAGS.n, FLAGS.d)))
    return np.stack(out).astype(np.float32)


def main(argv):
    del argv
    from sklearn.cluster import KMeans  # benchmark-only dependency (the test extra)
    feats = _features()
    x = jnp.asarray(feats)
    fn = jax.jit(jax.vmap(lambda key, f: cluster.kmeans(key, f, FLAGS.k, max_iter=FLAGS.max_iter, tol=FLAGS.tol)))
    keys = jax.random.split(jax.random.PRNGKey(0), FLAGS.classes)
    t = time.perf_counter()
    compiled = fn.lower(keys, x).compile()
    compile_s = time.perf_counter() - t
    jax.block_until_ready(compiled(keys, x))
    ours, inertia = [], []
    for r in range(FLAGS.repeats):
        keys = jax.random.split(jax.random.PRNGKey(r + 1), FLAGS.classes)
        t = time.perf_counter()
        res = jax.block_until_ready(compiled(keys, x))
        ours.append(time.perf_counter() - t)
        inertia.append(float(jnp.mean(res.inertia)))
    theirs, sk_inertia = [], []
    for r in range(FLAGS.repeats):
        t = time.perf_counter()
        fits = [KMeans(FLAGS.k, n_init=1, max_iter=FLAGS.max_iter, tol=FLAGS.tol, algorithm="lloyd",
                       random_state=r).fit(f) for f in feats]
        theirs.append(time.perf_counter() - t)
        sk_inertia.append(float(np.mean([f.inertia_ for f in fits])))
    analysis = xla_analysis(compiled)
    record = {"benchmark": "kmeans", "features": FLAGS.features, "classes": FLAGS.classes, "n": int(feats.shape[1]),
              "d": int(feats.shape[2]), "k": FLAGS.k, "max_iter": FLAGS.max_iter,
              "median_s": round(statistics.median(ours), 4), "sklearn_median_s": round(statistics.median(theirs), 4),
              "speedup_vs_sklearn": round(statistics.median(theirs) / statistics.median(ours), 2),
              "inertia": round(statistics.mean(inertia), 3), "sklearn_inertia": round(statistics.mean(sk_inertia), 3),
              "compile_s": round(compile_s, 2), "flops": analysis["flops"], "temp_bytes": analysis["temp_bytes"],
              "repeats": FLAGS.repeats, "jax": jax.__version__, "backend": jax.default_backend(),
              "machine": platform.machine(), "date": time.strftime("%Y-%m-%d")}
    print(json.dumps(record))


if __name__ == "__main__":
    app.run(main)
