"""How far the mean embedding of DREAM+'s representatives lies from the class mean, against a random batch of the
same size (why DREAM+ on DM can lose to DM: DM matches the class mean embedding, and k-means representatives, one
per cluster whatever the cluster's size, are not an unbiased sample of the class).

    python benchmarks/representative_bias.py --dataset=fashion_mnist --per_class=1024 --batch=64 --pool=256

For several fresh random ConvNets (DM draws one per step): per class, the mean embedding of ``per_class`` random
real images (the reference mean), of ``batch`` random real images, and of ``batch`` representatives (k-means on
the embeddings of ``pool`` random images of the class, the image nearest each centre:
``samplers.select_representatives``). Prints the mean over classes and networks of ||m_batch − m_ref||² / ||m_ref||²
for both, and the ratio.
"""
from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ddjax import algorithms, data, models  # noqa: E402
from ddjax.algorithms import samplers  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--per_class", type=int, default=1024)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--pool", type=int, default=256)
    p.add_argument("--kmeans_iters", type=int, default=30)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--networks", type=int, default=3)
    args = p.parse_args(argv)
    ds = data.load_dataset(args.dataset)
    rng = np.random.default_rng(0)
    keep = np.concatenate([rng.permutation(np.flatnonzero(ds.train_labels == c))[:args.per_class]
                           for c in range(ds.num_classes)])
    real = algorithms.make_real_pool(ds.train_images[keep], ds.train_labels[keep], ds.num_classes)
    model = models.build_model("convnet", ds.num_classes, width=args.width, depth=3)
    rows = []
    for n in range(args.networks):
        variables = models.init_model(model, jax.random.PRNGKey(100 + n), ds.image_shape)

        @jax.jit
        def embed(x):  # (K, N, H, W, C) -> (K, N, D)
            return samplers.embed_in_chunks(
                lambda b: models.apply_model(model, variables, b, train=True, output="embed")[0], x)

        ref = embed(real.images).mean(1)
        k_rand, k_rep = jax.random.split(jax.random.PRNGKey(n))
        rand = embed(algorithms.sample_per_class(k_rand, real, args.batch)).mean(1)
        reps = jax.jit(lambda k: samplers.select_representatives(k, embed, real, args.batch, 1, pool=args.pool,
                                                                 kmeans_iters=args.kmeans_iters))(k_rep)
        rep = embed(reps).mean(1)
        norm = jnp.sum(ref ** 2, axis=1)
        rows.append((float(jnp.mean(jnp.sum((rand - ref) ** 2, 1) / norm)),
                     float(jnp.mean(jnp.sum((rep - ref) ** 2, 1) / norm))))
        print(f"network {n}: random batch {rows[-1][0]:.5f}  representatives {rows[-1][1]:.5f}", flush=True)
    r = np.array(rows)
    print(f"mean relative squared error of the batch mean embedding: random {r[:, 0].mean():.5f}, "
          f"representatives {r[:, 1].mean():.5f} ({r[:, 1].mean() / r[:, 0].mean():.1f}x)")


if __name__ == "__main__":
    main()
