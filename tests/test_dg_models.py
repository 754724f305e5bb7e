"""ResNet-50 (parameter count against the torchvision formula), the style-transfer network ψ (conditional
instance norm with one domain's θ is instance norm with that affine; mixing is linear; identity at init) and the
batch-norm input probe."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddjax import models
from ddjax.errors import ConfigError
from ddjax.models.convnet import InstanceNorm


def _abstract_count(model, shape):
    return models.count_params(jax.eval_shape(lambda: models.init_model(model, jax.random.PRNGKey(0), shape)))


def resnet50_formula(width: int, num_classes: int, in_ch: int = 3) -> int:
    """torchvision's ResNet-50 parameter count (convs without bias, BN affine 2C, Linear with bias) with the
    small-image 3x3 stem, written from the layer list."""
    bn = lambda c: 2 * c  # noqa: E731
    total = 3 * 3 * in_ch * width + bn(width)
    in_c = width
    for s, blocks in enumerate((3, 4, 6, 3)):
        planes = width * 2**s
        for b in range(blocks):
            total += in_c * planes + bn(planes) + 9 * planes * planes + bn(planes)
            total += planes * 4 * planes + bn(4 * planes)
            if b == 0:  # the first block of every stage changes the width (stage 1: w -> 4w), so it projects
                total += in_c * 4 * planes + bn(4 * planes)
            in_c = 4 * planes
    return total + in_c * num_classes + num_classes


def test_resnet50_param_count_matches_torchvision_formula():
    # torchvision resnet50(num_classes=1000): 25,557,032 with the 7x7 stem (3*64*49 = 9408 weights); ours has 3x3
    assert resnet50_formula(64, 1000) == 25_557_032 - 3 * 64 * 49 + 3 * 64 * 9
    assert _abstract_count(models.build_model("resnet50", 10), (32, 32, 3)) == 23_520_842 == resnet50_formula(64, 10)
    assert _abstract_count(models.build_model("resnet50", 7, width=4), (8, 8, 3)) == resnet50_formula(4, 7)


def test_resnet50_runs_and_trains_batch_stats():
    model = models.build_model("resnet50", 3, width=2)
    variables = models.init_model(model, jax.random.PRNGKey(0), (8, 8, 3))
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 3))
    feats, new_vars = models.apply_model(model, variables, x, train=True, output="features")
    assert feats["logits"].shape == (4, 3) and feats["embed"].shape == (4, 2 * 32)
    assert len(feats["blocks"]) == 4
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), variables["batch_stats"], new_vars["batch_stats"])
    assert all(jax.tree.leaves(changed))


@pytest.fixture(scope="module")
def cin_setup():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(3, 5, 4, 6)) * 2 + 1, jnp.float32)
    cin = models.ConditionalInstanceNorm(num_styles=3)
    params = {"params": {"scale": jnp.asarray(rng.normal(size=(3, 6)), jnp.float32),
                         "bias": jnp.asarray(rng.normal(size=(3, 6)), jnp.float32)}}
    return x, cin, params


@pytest.mark.parametrize("domain", [0, 2])
def test_cin_with_one_domain_theta_equals_instance_norm_with_that_affine(cin_setup, domain):
    x, cin, params = cin_setup
    got = cin.apply(params, x, models.domain_weights(jnp.full((3,), domain), 3))
    p = params["params"]
    want = InstanceNorm().apply({"params": {"scale": p["scale"][domain], "bias": p["bias"][domain]}}, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # and against numpy in float64
    xn = np.asarray(x, np.float64)
    mu = xn.mean(axis=(1, 2), keepdims=True)
    var = ((xn - mu) ** 2).mean(axis=(1, 2), keepdims=True)
    np_out = (xn - mu) / np.sqrt(var + 1e-5) * np.asarray(p["scale"][domain]) + np.asarray(p["bias"][domain])
    np.testing.assert_allclose(got, np_out, rtol=1e-4, atol=1e-4)


def test_cin_mixed_weights_mix_the_affines(cin_setup):
    x, cin, params = cin_setup
    lam = 0.3
    weights = lam * models.domain_weights(jnp.zeros(3, jnp.int32), 3) + (1 - lam) * models.domain_weights(
        jnp.ones(3, jnp.int32), 3)
    p = params["params"]
    mixed = {"params": {"scale": lam * p["scale"][0] + (1 - lam) * p["scale"][1],
                        "bias": lam * p["bias"][0] + (1 - lam) * p["bias"][1]}}
    np.testing.assert_allclose(cin.apply(params, x, weights), InstanceNorm().apply(mixed, x), rtol=1e-5, atol=1e-5)


def test_style_transfer_starts_as_identity_and_checks_weights():
    psi = models.StyleTransfer(num_domains=2, width=4, num_res_blocks=1)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 6, 3))
    w0 = models.domain_weights(jnp.zeros(2, jnp.int32), 2)
    params = psi.init(jax.random.PRNGKey(1), x, w0)
    np.testing.assert_array_equal(psi.apply(params, x, w0), x)
    with pytest.raises(ConfigError, match="style weights"):
        psi.apply(params, x, jnp.ones((2, 3)))


def test_bn_inputs_lists_every_batch_norm_with_its_running_statistics():
    model = models.build_model("resnet18", 3, width=2)
    variables = models.init_model(model, jax.random.PRNGKey(0), (8, 8, 3))
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 3))
    logits, layers = models.bn_inputs(model, variables, x)
    assert logits.shape == (4, 3)
    assert len(layers) == 1 + 8 * 2 + 3  # stem, two per BasicBlock, three projection shortcuts
    maps, mean, var = layers[0]
    assert maps.shape == (4, 8, 8, 2) and mean.shape == (2,) and var.shape == (2,)
    conv_out = jax.lax.conv_general_dilated(x, variables["params"]["stem_conv"]["kernel"], (1, 1), ((1, 1), (1, 1)),
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(maps, conv_out, rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="batch-norm"):
        models.bn_inputs(models.build_model("convnet", 3, width=4, depth=1), models.init_model(
            models.build_model("convnet", 3, width=4, depth=1), jax.random.PRNGKey(0), (8, 8, 3)), x)
