"""Distribution-matching losses (DM: Zhao & Bilen, "Dataset Condensation with Distribution Matching", WACV'23)."""
import jax
import jax.numpy as jnp


def mean_embedding_distance(real: jax.Array, syn: jax.Array) -> jax.Array:
    r"""Squared distance between mean embeddings, the DM loss for one class.

    .. math:: \mathcal{L} = \Big\| \tfrac{1}{|R|}\sum_{r\in R} f(r) - \tfrac{1}{|S|}\sum_{s\in S} f(s) \Big\|_2^2

    Args:
      real: embeddings ``(..., n_real, d)``; the sample axis is the second to last.
      syn: embeddings ``(..., n_syn, d)``; leading axes must match ``real``'s.
    Returns:
      The squared distance, shape ``real.shape[:-2]`` (a scalar for 2-D inputs).
    """
    if real.shape[-1] != syn.shape[-1] or real.shape[:-2] != syn.shape[:-2]:
        raise ValueError(f"mean_embedding_distance: real {real.shape} and syn {syn.shape} must agree on every "
                         "axis but the sample axis (-2)")
    diff = jnp.mean(real, axis=-2) - jnp.mean(syn, axis=-2)
    return jnp.sum(jnp.square(diff), axis=-1)


def mean_embedding_distance_per_class(real: jax.Array, syn: jax.Array) -> jax.Array:
    r"""DM loss summed over classes: :math:`\sum_c \|\bar f(R_c) - \bar f(S_c)\|^2` (reference sums, not averages).

    Args:
      real: ``(num_classes, n_real, d)``; syn: ``(num_classes, n_syn, d)``.
    """
    return jnp.sum(mean_embedding_distance(real, syn))
