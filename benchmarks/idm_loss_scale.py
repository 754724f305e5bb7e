"""The scale of IDM's two terms at a given data set and width (issue 14: the class-aware term's weight).

    python benchmarks/idm_loss_scale.py --dataset=fashion_mnist --width=128 --ipc=10 --batch_real=256

IDM's loss (``ddjax/algorithms/idm.py``) is ``Σ_c ‖f̄(R_c) − f̄(S_c)‖² + λ_ce · acc_q · Σ_c CE_c`` with ``acc_q`` the
matching network's training accuracy in percent. For ``--networks`` fresh random ConvNets this prints, at step 0
(synthetic images initialised from real ones, as the configs do; no augmentation), the distance term
``Σ_c ‖f̄(R_c) − f̄(S_c)‖²`` for a random real batch of ``batch_real`` per class and ``ipc`` other real images per
class. The class-aware term needs a trained network; its size is ``λ_ce · acc · K · CE̅`` with acc in percent
(10-90) and CE̅ the synthetic images' mean cross-entropy (ln K ≈ 2.3 untrained, ~0.3-1.7 trained), i.e. of order
``λ_ce · 10²-10³`` whatever the data; the ratio of the two is what a weight must be read against.
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
from ddjax.losses.distribution import mean_embedding_distance_per_class  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--batch_real", type=int, default=256)
    p.add_argument("--networks", type=int, default=3)
    args = p.parse_args(argv)
    ds = data.load_dataset(args.dataset)
    real = algorithms.make_real_pool(ds.train_images, ds.train_labels, ds.num_classes)
    model = models.build_model("convnet", ds.num_classes, width=args.width, depth=args.depth)
    values, dims = [], None
    for n in range(args.networks):
        variables = models.init_model(model, jax.random.PRNGKey(100 + n), ds.image_shape)

        @jax.jit
        def embed(x):  # (K, N, H, W, C) -> (K, N, D)
            return samplers.embed_in_chunks(
                lambda b: models.apply_model(model, variables, b, train=True, output="embed")[0], x)

        batch = algorithms.sample_per_class(jax.random.PRNGKey(n), real, args.batch_real + args.ipc)
        emb = embed(batch)
        dims = int(emb.shape[-1])
        values.append(float(mean_embedding_distance_per_class(emb[:, :args.batch_real], emb[:, args.batch_real:])))
        print(f"network {n}: distance term {values[-1]:.4f} (embedding {dims}-d)", flush=True)
    v = np.array(values)
    ce_low, ce_high = 10 * ds.num_classes * 0.3, 90 * ds.num_classes * float(jnp.log(ds.num_classes))
    print(f"{args.dataset} w{args.width} d{args.depth} ({dims}-d), IPC {args.ipc}, batch_real {args.batch_real}: "
          f"distance term {v.mean():.4f} ± {v.std():.4f}; acc·ΣCE spans ~{ce_low:.0f}-{ce_high:.0f}, i.e. "
          f"{ce_low / v.mean():.0f}-{ce_high / v.mean():.0f}x the distance per unit of ce_weight")


if __name__ == "__main__":
    main()
