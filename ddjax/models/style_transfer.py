r"""The domain-transfer network ψ of DD for DG (Sec. 3.3) and a probe of a model's batch-norm inputs.

ψ is the style-transfer network of Dumoulin et al. (2017, "A learned representation for artistic style"): a CNN
whose every normalisation is a *conditional instance norm*, one affine :math:`\theta_e = (\gamma_e, \beta_e)` per
style (here: per seen domain :math:`e`):

.. math:: \mathrm{CIN}(x; w) = \frac{x - \mu_{n,c}(x)}{\sqrt{\sigma^2_{n,c}(x) + \epsilon}}\,(w^\top\Gamma)_c
          + (w^\top B)_c

with :math:`w` a row of style weights: one-hot for domain :math:`e` (then :math:`\theta_e` exactly), or the DSM
mixture :math:`\lambda\,\mathrm{onehot}(e) + (1-\lambda)\,\mathrm{onehot}(e')` (Sec. 3.4), which mixes
:math:`\lambda\theta_e + (1-\lambda)\theta_{e'}` because the affine is linear in :math:`w`.

The paper gives no architecture for ψ beyond "the style transfer network from Dumoulin et al.". Dumoulin's network
downsamples twice and has five residual blocks for 256-pixel photos; ddjax's images are 8-64 pixels, so ψ keeps
the resolution: ``conv3x3(w) -> CIN -> relu``, ``num_res_blocks`` residual blocks ``conv3x3 -> CIN -> relu ->
conv3x3 -> CIN (+ skip)``, and a last ``conv3x3`` back to the image channels whose output is *added* to the
input. The last conv starts at zero, so ψ starts as the identity (ReZero-style); a deliberate ddjax choice so
that the transferred images start as the synthetic images (docs/design.md, "Domain generalisation").
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ddjax.errors import ConfigError
from ddjax.models.convnet import NORM_EPS, check_images, check_positive, torch_conv


class ConditionalInstanceNorm(nn.Module):
    """Instance norm whose affine is a weighted combination of ``num_styles`` learned affines (``scale``,
    ``bias``: ``(num_styles, C)``, initialised to 1 and 0). ``weights``: ``(B, num_styles)`` style weights."""

    num_styles: int
    epsilon: float = NORM_EPS

    @nn.compact
    def __call__(self, x: jax.Array, weights: jax.Array) -> jax.Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (self.num_styles, c), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (self.num_styles, c), jnp.float32)
        mean = jnp.mean(x, axis=(-3, -2), keepdims=True)
        centred = x - mean
        var = jnp.mean(jnp.square(centred), axis=(-3, -2), keepdims=True)
        gamma = (weights @ scale)[:, None, None, :]
        beta = (weights @ bias)[:, None, None, :]
        return centred * jax.lax.rsqrt(var + self.epsilon) * gamma + beta


class StyleTransfer(nn.Module):
    """ψ(x; w): images ``(B, H, W, C)`` and style weights ``(B, num_domains)`` -> images of the same shape."""

    num_domains: int
    width: int = 32
    num_res_blocks: int = 2

    def __post_init__(self) -> None:
        check_positive("num_domains", self.num_domains)
        check_positive("style-transfer width", self.width)
        if self.num_res_blocks < 0:
            raise ConfigError(f"num_res_blocks must be >= 0, got {self.num_res_blocks}")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, weights: jax.Array) -> jax.Array:
        check_images(x)
        if weights.shape != (x.shape[0], self.num_domains):
            raise ConfigError(f"style weights must be (batch, num_domains) = ({x.shape[0]}, {self.num_domains}), "
                              f"got {weights.shape}")
        w = self.width
        h = torch_conv(w, x.shape[-1], 3, padding=1, use_bias=True, name="in_conv")(x)
        h = nn.relu(ConditionalInstanceNorm(self.num_domains, name="in_norm")(h, weights))
        for r in range(self.num_res_blocks):
            skip = h
            h = torch_conv(w, w, 3, padding=1, use_bias=True, name=f"res{r}_conv1")(h)
            h = nn.relu(ConditionalInstanceNorm(self.num_domains, name=f"res{r}_norm1")(h, weights))
            h = torch_conv(w, w, 3, padding=1, use_bias=True, name=f"res{r}_conv2")(h)
            h = ConditionalInstanceNorm(self.num_domains, name=f"res{r}_norm2")(h, weights) + skip
        out = nn.Conv(x.shape[-1], (3, 3), padding=((1, 1), (1, 1)), kernel_init=nn.initializers.zeros,
                      name="out_conv")(h)
        return x + out


def domain_weights(domains: jax.Array, num_domains: int) -> jax.Array:
    """One-hot style weights ``(B, num_domains)`` selecting θ_e for each domain index in ``domains`` ``(B,)``."""
    return jax.nn.one_hot(domains, num_domains, dtype=jnp.float32)


def bn_inputs(model: nn.Module, variables: dict, x: jax.Array, *, output: str = "logits"
              ) -> tuple[Any, list[tuple[jax.Array, jax.Array, jax.Array]]]:
    """Run ``model`` in eval mode and collect, for every ``nn.BatchNorm`` in call order, ``(input maps, running
    mean, running var)``: the layers SRe2L's BN-statistics loss and DD for DG's style losses read.

    Pure (the maps are traced values of this call); safe under ``jit`` and ``grad``. Returns ``(out, layers)``.
    """
    layers: list[tuple[jax.Array, jax.Array, jax.Array]] = []

    def record(next_fun, args, kwargs, context):
        module = context.module
        if isinstance(module, nn.BatchNorm) and context.method_name == "__call__":
            stats = module.variables["batch_stats"]
            layers.append((args[0], stats["mean"], stats["var"]))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        out = model.apply(variables, x, train=False, output=output)
    if not layers:
        raise ConfigError(f"{type(model).__name__} has no batch-norm layer; the squeeze model must use norm='batch'")
    return out, layers
