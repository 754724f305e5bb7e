"""Tests for ddjax.models: parameter counts, shapes, reference numerics, batch norm, init, transforms, errors."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddjax.errors import ConfigError
from ddjax.models import (ARCHITECTURE_EXAMPLES, MODEL_NAMES, NORM_NAMES, ConvNet, ResNet18, apply_model,
                          build_architecture, build_model, count_params, init_model)


def _abstract_count(model, image_shape):
    """Parameter count from shapes only (no compute)."""
    return count_params(jax.eval_shape(lambda k: init_model(model, k, image_shape), jax.random.key(0)))


def _images(key, n, h=16, w=16, c=3):
    return jax.random.normal(jax.random.key(key), (n, h, w, c), jnp.float32)


# --------------------------------------------------------------------------- parameter counts

def test_convnet3_w128_param_count_is_reference_value():
    assert _abstract_count(build_model("convnet", 10), (32, 32, 3)) == 320_010


def test_resnet18_cifar_param_count_matches_torch():
    assert _abstract_count(build_model("resnet18", 10), (32, 32, 3)) == 11_173_962


def _conv_count(c_in: int, c_out: int, k: int, norm_params: int = 0) -> int:
    """PyTorch ``Conv2d(c_in, c_out, k)`` with bias, plus the following norm layer's affine parameters."""
    return c_in * c_out * k * k + c_out + norm_params


def test_alexnet_and_vgg11_param_counts_match_the_reference_layer_formulas():
    # DC's AlexNet on 32x32x3: conv5(3→128), conv5(128→192), conv3(192→256), conv3(256→192), conv3(192→192),
    # three 2x2 max-pools (32→4), Linear(192·4·4, 10); no norm layers.
    alexnet = (_conv_count(3, 128, 5) + _conv_count(128, 192, 5) + _conv_count(192, 256, 3)
               + _conv_count(256, 192, 3) + _conv_count(192, 192, 3) + 192 * 4 * 4 * 10 + 10)
    assert alexnet == 1_872_202
    assert _abstract_count(build_architecture("AlexNet", 10), (32, 32, 3)) == alexnet
    # DC's VGG11: [64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M], conv3 + instance norm (2C) each, Linear(512, 10).
    chans = [3, 64, 128, 256, 256, 512, 512, 512, 512]
    vgg = sum(_conv_count(a, b, 3, 2 * b) for a, b in zip(chans[:-1], chans[1:])) + 512 * 10 + 10
    assert vgg == 9_231_114
    assert _abstract_count(build_architecture("vgg11", 10), (32, 32, 3)) == vgg
    # 28x28 grayscale: the first conv's extra padding makes the maps those of a 32x32 input.
    assert _abstract_count(build_architecture("AlexNet", 10), (28, 28, 1)) == alexnet - 2 * 128 * 25


def test_build_architecture_names_give_the_dc_variants():
    assert all(build_architecture(n, 10) is not None for n in ARCHITECTURE_EXAMPLES)
    assert build_architecture("ConvNetW64", 10).width == 64
    assert build_architecture("convnetd4", 10).depth == 4
    assert (build_architecture("ConvNetBN", 10).norm, build_architecture("ConvNetMP", 10).pooling) == ("batch", "max")
    assert (build_architecture("ResNet18", 10).norm, build_architecture("ResNet18BN", 10).norm) == ("instance", "batch")
    assert build_architecture("VGG11BN", 10).norm == "batch" and build_architecture("AlexNet", 10).norm == "none"
    with pytest.raises(ConfigError, match="unknown architecture 'LeNet'; use one of ConvNet"):
        build_architecture("LeNet", 10)


def test_vgg11_on_8x8_images_is_one_clear_error():
    with pytest.raises(ConfigError, match="VGG-11 needs larger images: a 8x8 input"):
        _abstract_count(build_architecture("VGG11", 10), (8, 8, 1))


def test_convnet_param_count_by_formula_28x28_padding_rule():
    width, depth, classes, cin = 16, 2, 10, 1
    count, size = 0, 32  # 28 with first-conv padding 3 -> 32x32
    for d in range(depth):
        count += (cin if d == 0 else width) * 9 * width + width  # conv kernel + bias
        count += 2 * width  # instance-norm scale + bias
        size //= 2
    count += size * size * width * classes + classes
    assert count == 12_794
    model = build_model("convnet", classes, width=width, depth=depth)
    assert _abstract_count(model, (28, 28, cin)) == count


def test_layer_norm_affine_has_reference_shape():
    model = build_model("convnet", 10, width=8, depth=2, norm="layer")
    shapes = jax.eval_shape(lambda k: init_model(model, k, (32, 32, 3)), jax.random.key(0))["params"]
    # reference nn.LayerNorm([C, H, W]) on the conv output (before pooling); NHWC here
    assert shapes["norm_0"]["scale"].shape == (32, 32, 8)
    assert shapes["norm_1"]["bias"].shape == (16, 16, 8)


def test_count_params_ignores_batch_stats():
    model = build_model("convnet", 10, width=8, depth=1, norm="batch")
    variables = init_model(model, jax.random.key(0), (8, 8, 1))
    assert "batch_stats" in variables
    assert count_params(variables) == count_params(variables["params"]) == (9 * 8 + 8) + 2 * 8 + (16 * 8 * 10 + 10)


# --------------------------------------------------------------------------- shapes

@pytest.mark.parametrize("norm", NORM_NAMES)
def test_convnet_output_shapes_each_norm(norm):
    model = build_model("convnet", 5, width=8, depth=3, norm=norm)
    variables = init_model(model, jax.random.key(1), (16, 16, 3))
    x = _images(0, 4)
    logits, _ = apply_model(model, variables, x, train=False)
    embed, _ = apply_model(model, variables, x, train=False, output="embed")
    feats, _ = apply_model(model, variables, x, train=False, output="features")
    train_feats, _ = apply_model(model, variables, x, train=True, output="features")
    assert jax.tree_util.tree_map(jnp.shape, train_feats) == jax.tree_util.tree_map(jnp.shape, feats)
    assert logits.shape == (4, 5)
    assert embed.shape == (4, 2 * 2 * 8)
    assert feats["logits"].shape == (4, 5) and feats["embed"].shape == (4, 32)
    assert [b.shape for b in feats["blocks"]] == [(4, 8, 8, 8), (4, 4, 4, 8), (4, 2, 2, 8)]
    np.testing.assert_allclose(feats["embed"], feats["blocks"][-1].reshape(4, -1))
    np.testing.assert_allclose(embed, feats["embed"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logits, feats["logits"], rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(logits))


@pytest.mark.parametrize("pooling,activation,side", [("max", "leakyrelu", 2), ("none", "sigmoid", 8)])
def test_convnet_pooling_and_activation_options(pooling, activation, side):
    model = build_model("convnet", 3, width=4, depth=2, pooling=pooling, activation=activation)
    variables = init_model(model, jax.random.key(0), (8, 8, 1))
    embed, _ = apply_model(model, variables, _images(0, 2, 8, 8, 1), train=False, output="embed")
    assert embed.shape == (2, side * side * 4)


@pytest.mark.parametrize("norm", ["batch", "instance"])
def test_resnet18_output_shapes(norm):
    model = build_model("resnet18", 3, width=4, norm=norm)
    variables = init_model(model, jax.random.key(0), (8, 8, 3))
    assert ("batch_stats" in variables) == (norm == "batch")
    feats, new_vars = apply_model(model, variables, _images(0, 4, 8, 8, 3), train=True, output="features")
    assert feats["logits"].shape == (4, 3)
    assert feats["embed"].shape == (4, 32)
    assert [b.shape for b in feats["blocks"]] == [(4, 8, 8, 4), (4, 4, 4, 8), (4, 2, 2, 16), (4, 1, 1, 32)]
    np.testing.assert_allclose(feats["embed"], feats["blocks"][-1].mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    assert set(new_vars) == set(variables)


def test_28x28_gives_same_embed_size_as_32x32():
    model = build_model("convnet", 10, width=4)
    v28 = init_model(model, jax.random.key(0), (28, 28, 1))
    v32 = init_model(model, jax.random.key(0), (32, 32, 1))
    e28, _ = apply_model(model, v28, _images(0, 2, 28, 28, 1), train=False, output="embed")
    e32, _ = apply_model(model, v32, _images(0, 2, 32, 32, 1), train=False, output="embed")
    assert e28.shape == e32.shape == (2, 4 * 4 * 4)
    # identical parameter shapes, so the two are interchangeable
    assert jax.tree_util.tree_map(jnp.shape, v28) == jax.tree_util.tree_map(jnp.shape, v32)


# --------------------------------------------------------------------------- numerics vs numpy

def _numpy_block(x, kernel, bias, scale, shift, eps=1e-5):
    """conv3x3 (padding 1, explicit loop over taps) -> per-channel group norm -> relu -> 2x2 average pool."""
    n, h, w, _ = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    y = np.zeros((n, h, w, kernel.shape[-1]), np.float64)
    for i in range(3):
        for j in range(3):
            y += np.einsum("nhwc,co->nhwo", xp[:, i:i + h, j:j + w, :], kernel[i, j])
    y += bias
    mean = y.mean(axis=(1, 2), keepdims=True)
    var = y.var(axis=(1, 2), keepdims=True)
    y = (y - mean) / np.sqrt(var + eps) * scale + shift
    y = np.maximum(y, 0.0)
    return y.reshape(n, h // 2, 2, w // 2, 2, -1).mean(axis=(2, 4))


def test_instance_norm_block_matches_numpy_reference():
    model = ConvNet(num_classes=3, width=6, depth=1, norm="instance")
    variables = init_model(model, jax.random.key(0), (8, 8, 2))
    params = jax.tree_util.tree_map(np.asarray, variables["params"])
    # non-trivial affine so the scale/shift are exercised
    rng = np.random.default_rng(0)
    params["norm_0"]["scale"] = rng.normal(1.0, 0.3, 6).astype(np.float32)
    params["norm_0"]["bias"] = rng.normal(0.0, 0.3, 6).astype(np.float32)
    x = rng.normal(size=(3, 8, 8, 2)).astype(np.float32) * 2 + 0.5
    feats, _ = apply_model(model, {"params": params}, jnp.asarray(x), train=False, output="features")
    ref = _numpy_block(x.astype(np.float64), params["conv_0"]["kernel"], params["conv_0"]["bias"],
                       params["norm_0"]["scale"], params["norm_0"]["bias"])
    np.testing.assert_allclose(np.asarray(feats["blocks"][0]), ref, atol=1e-4, rtol=1e-4)
    logits = ref.reshape(3, -1) @ params["head"]["kernel"] + params["head"]["bias"]
    np.testing.assert_allclose(np.asarray(feats["logits"]), logits, atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------- batch norm

def test_batch_norm_train_updates_stats_eval_uses_them():
    model = build_model("convnet", 4, width=4, depth=1, norm="batch")
    variables = init_model(model, jax.random.key(0), (8, 8, 3))
    x = _images(1, 6, 8, 8, 3) * 3.0 + 1.0

    _, same = apply_model(model, variables, x, train=False)
    assert same is variables

    _, inter = model.apply(variables, x, train=True, mutable=["batch_stats", "intermediates"],
                           capture_intermediates=lambda mdl, _: mdl.name == "conv_0")
    conv_out = inter["intermediates"]["conv_0"]["__call__"][0]
    _, new_vars = apply_model(model, variables, x, train=True)
    stats = new_vars["batch_stats"]["norm_0"]
    # flax momentum 0.9 == PyTorch momentum 0.1: running = 0.9 * old + 0.1 * batch
    np.testing.assert_allclose(stats["mean"], 0.1 * conv_out.mean(axis=(0, 1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * conv_out.var(axis=(0, 1, 2)), rtol=1e-5, atol=1e-6)
    assert new_vars["params"] is variables["params"]

    # train mode: a sample's output depends on its batch; eval mode: it does not, and it uses the running stats
    train_full, _ = apply_model(model, new_vars, x, train=True)
    train_two, _ = apply_model(model, new_vars, x[:2], train=True)
    assert not np.allclose(train_full[:2], train_two, atol=1e-4)
    eval_full, _ = apply_model(model, new_vars, x, train=False)
    eval_two, _ = apply_model(model, new_vars, x[:2], train=False)
    np.testing.assert_allclose(eval_full[:2], eval_two, rtol=1e-5, atol=1e-5)
    eval_old, _ = apply_model(model, variables, x, train=False)
    assert not np.allclose(eval_full, eval_old, atol=1e-4)


# --------------------------------------------------------------------------- initialisation

def test_torch_default_init_bounds():
    model = build_model("convnet", 10, width=32, depth=2)
    params = init_model(model, jax.random.key(3), (16, 16, 3))["params"]
    fan_ins = {"conv_0": 3 * 9, "conv_1": 32 * 9, "head": 4 * 4 * 32}
    for name, fan_in in fan_ins.items():
        bound = 1.0 / math.sqrt(fan_in)
        kernel = np.asarray(params[name]["kernel"])
        bias = np.asarray(params[name]["bias"])
        assert np.abs(kernel).max() <= bound and np.abs(bias).max() <= bound
        assert np.abs(kernel).max() > 0.9 * bound  # uniform over the full range, not a narrower init
        np.testing.assert_allclose(kernel.std(), bound / math.sqrt(3), rtol=0.1)
    np.testing.assert_array_equal(params["norm_0"]["scale"], 1.0)
    np.testing.assert_array_equal(params["norm_0"]["bias"], 0.0)


def test_resnet_init_bounds():
    model = build_model("resnet18", 3, width=4)
    params = init_model(model, jax.random.key(0), (8, 8, 3))["params"]
    kernel = np.asarray(params["stage2_block0"]["shortcut_conv"]["kernel"])
    assert kernel.shape == (1, 1, 4, 8)
    assert np.abs(kernel).max() <= 1 / math.sqrt(4)
    assert "bias" not in params["stem_conv"]


# --------------------------------------------------------------------------- transforms

def test_vmap_init_over_keys_gives_distinct_networks():
    model = build_model("convnet", 10, width=4, depth=2)
    keys = jax.random.split(jax.random.key(0), 3)
    stacked = jax.vmap(lambda k: init_model(model, k, (8, 8, 1)))(keys)
    kernel = stacked["params"]["conv_0"]["kernel"]
    assert kernel.shape == (3, 3, 3, 1, 4)
    assert not np.allclose(kernel[0], kernel[1])
    single = init_model(model, keys[1], (8, 8, 1))
    np.testing.assert_allclose(kernel[1], single["params"]["conv_0"]["kernel"])


@pytest.mark.parametrize("name,norm", [("convnet", "instance"), ("convnet", "batch"), ("resnet18", "batch")])
def test_grad_wrt_input_is_finite_under_jit(name, norm):
    model = build_model(name, 3, width=4, depth=2, norm=norm)  # depth is ignored by resnet18
    variables = init_model(model, jax.random.key(0), (8, 8, 3))

    @jax.jit
    def loss(x):
        emb, _ = apply_model(model, variables, x, train=True, output="embed")
        return jnp.sum(emb.mean(0) ** 2)

    g = jax.grad(loss)(_images(2, 4, 8, 8, 3))
    assert g.shape == (4, 8, 8, 3)
    assert np.all(np.isfinite(g)) and np.any(g != 0)


def test_jit_apply_returns_updated_batch_stats():
    model = build_model("resnet18", 3, width=4)
    variables = init_model(model, jax.random.key(0), (8, 8, 3))
    step = jax.jit(lambda v, x: apply_model(model, v, x, train=True))
    logits, new_vars = step(variables, _images(0, 4, 8, 8, 3))
    assert logits.shape == (4, 3)
    assert jax.tree_util.tree_structure(new_vars) == jax.tree_util.tree_structure(variables)
    assert not np.allclose(new_vars["batch_stats"]["stem_norm"]["mean"], 0.0)


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize("kwargs,what", [
    (dict(name="vgg16"), "model"),
    (dict(norm="batchnorm"), "norm"),
    (dict(pooling="avgpooling"), "pooling"),
    (dict(activation="gelu"), "activation"),
])
def test_unknown_names_raise_config_error_listing_choices(kwargs, what):
    args = dict(name="convnet") | kwargs
    with pytest.raises(ConfigError) as info:
        build_model(args.pop("name"), 10, **args)
    msg = str(info.value)
    assert what in msg and "valid choices" in msg and "\n" not in msg
    if what == "model":
        assert all(n in msg for n in MODEL_NAMES)
    if what == "norm":
        assert all(n in msg for n in NORM_NAMES)


def test_unknown_output_raises_config_error():
    model = build_model("convnet", 10, width=4, depth=1)
    variables = init_model(model, jax.random.key(0), (8, 8, 1))
    with pytest.raises(ConfigError, match="logits, embed, features"):
        apply_model(model, variables, _images(0, 1, 8, 8, 1), train=False, output="embedding")
    with pytest.raises(ConfigError, match="valid choices"):
        model.apply(variables, _images(0, 1, 8, 8, 1), output="penultimate")


def test_direct_construction_and_bad_inputs_raise_config_error():
    with pytest.raises(ConfigError, match="valid choices"):
        ConvNet(10, norm="instancenorm")
    with pytest.raises(ConfigError, match="valid choices"):
        ResNet18(10, norm="bn")
    with pytest.raises(ConfigError, match="multiple of 4"):
        build_model("convnet", 10, width=6, norm="group")
    with pytest.raises(ConfigError, match="positive integer"):
        build_model("convnet", 0)
    model = build_model("convnet", 10, width=4, depth=4)
    with pytest.raises(ConfigError, match="too small for depth 4"):
        init_model(model, jax.random.key(0), (8, 8, 1))
    with pytest.raises(ConfigError, match=r"\(H, W, C\)"):
        init_model(model, jax.random.key(0), (32, 32))
    assert count_params(init_model(model, jax.random.key(0), np.zeros((1, 32, 32, 1)).shape[1:])) > 0
    variables = init_model(model, jax.random.key(0), (32, 32, 1))
    with pytest.raises(ConfigError, match="NHWC"):
        apply_model(model, variables, jnp.zeros((32, 32, 1)), train=False)
