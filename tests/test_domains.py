"""Domain collections (ddjax.data.domains), phase plans and the continual metrics (ddjax.continual)."""
import numpy as np
import pytest

from ddjax import continual
from ddjax.data import load_digits_arrays, load_domains
from ddjax.data import domains as dom
from ddjax.errors import ConfigError, DataNotFoundError
from launch.config import base_config, validate_config


# ------------------------------------------------------------------------------------------------------ rotated
def test_rotation_by_quarter_turns_equals_rot90_and_zero_is_identity():
    x = np.random.default_rng(0).random((3, 6, 6, 2)).astype(np.float32)
    np.testing.assert_allclose(dom.rotate_images(x, 0.0), x, atol=1e-6)
    np.testing.assert_allclose(dom.rotate_images(x, 90.0), np.rot90(x, 1, axes=(1, 2)), atol=1e-6)
    np.testing.assert_allclose(dom.rotate_images(x, 180.0), np.rot90(x, 2, axes=(1, 2)), atol=1e-6)


def test_rotation_of_one_pixel_is_bilinear_counter_clockwise():
    x = np.zeros((1, 5, 5, 1), np.float32)
    x[0, 0, 2, 0] = 1.0                       # top centre, 2 above the centre (2, 2)
    y = dom.rotate_images(x, 45.0)[0, ..., 0]
    # output (1, 1): u' = -1, v' = 1 -> u = 0, v = sqrt(2) -> reads the input at (row 2 - sqrt 2, col 2),
    # 0.586 of the way from row 0 to row 1: weight 1 - 0.586 on the lit pixel
    assert y[1, 1] == pytest.approx(np.sqrt(2.0) - 1.0, abs=1e-6)
    assert y[1, 3] == 0 and y[3, 1] == 0 and y[0, 2] < 0.2   # moved up-left (counter-clockwise), not right


def test_rotated_digits_domains_angles_labels_and_shared_statistics():
    c = load_domains("rotated", num_domains=3, angle_step=30.0)
    assert c.domains == ("rot0", "rot30", "rot60") and c.image_shape == (8, 8, 1) and c.num_classes == 10
    train_x, train_y, test_x, test_y = load_digits_arrays()
    np.testing.assert_allclose(c.mean, [train_x.mean()], rtol=1e-5)
    np.testing.assert_allclose(c.std, [train_x.std()], rtol=1e-5)
    d = c.load(2)
    assert d.name == "rotated_digits/rot60"
    np.testing.assert_array_equal(d.train_labels, train_y)
    np.testing.assert_array_equal(d.test_labels, test_y)
    expected = (dom.rotate_images(test_x, 60.0) - c.mean) / c.std
    np.testing.assert_allclose(d.test_images, expected, atol=1e-5)
    np.testing.assert_array_equal(d.train_images, c.load(2).train_images)   # deterministic
    test_only = c.load_test(2)
    np.testing.assert_array_equal(test_only[0], d.test_images)
    np.testing.assert_array_equal(test_only[1], d.test_labels)
    both = c.load_many((0, 2))
    assert both.name == "rotated_digits/rot0+rot60" and len(both.train_labels) == 2 * len(train_y)
    np.testing.assert_array_equal(both.train_images[len(train_y):], d.train_images)
    np.testing.assert_allclose(d.to_pixels(d.test_images), np.clip(dom.rotate_images(test_x, 60.0), 0, 1),
                               atol=1e-5)


def test_order_names_and_seeded_permutation_are_deterministic():
    default = load_domains("rotated", num_domains=6)
    a = load_domains("rotated", num_domains=6, order="random", order_seed=3)
    b = load_domains("rotated", num_domains=6, order="random", order_seed=3)
    assert a.domains == b.domains and sorted(a.domains, key=default.domains.index) == list(default.domains)
    assert a.domains == tuple(default.domains[i] for i in np.random.RandomState(3).permutation(6))
    assert a.domains != default.domains
    picked = load_domains("rotated", num_domains=6, names="rot27, rot0")
    assert picked.domains == ("rot27", "rot0")
    np.testing.assert_array_equal(picked.load(1).train_images, default.load(0).train_images)


# ------------------------------------------------------------------------------------------------------- styled
@pytest.fixture(scope="module")
def styled():
    return load_domains("styled")


def test_styled_domains_are_rgb_deterministic_and_distinct(styled):
    assert styled.domains == ("photo", "art", "cartoon", "sketch") and styled.image_shape == (8, 8, 3)
    np.testing.assert_array_equal(styled.mean, dom.IMAGENET_MEAN)
    _, train_y, _, test_y = load_digits_arrays()
    pixels = []
    for i in range(4):
        d = styled.load(i)
        assert d.train_images.shape == (len(train_y), 8, 8, 3) and d.test_images.shape == (len(test_y), 8, 8, 3)
        np.testing.assert_array_equal(d.train_labels, train_y)
        np.testing.assert_array_equal(d.train_images, styled.load(i).train_images)
        pixels.append(d.to_pixels(d.train_images))
    # clearly different renderings: mean absolute pixel difference between any two styles > 0.1
    for i in range(4):
        for j in range(i + 1, 4):
            assert np.abs(pixels[i] - pixels[j]).mean() > 0.1, (styled.domains[i], styled.domains[j])
    sketch = pixels[3]
    np.testing.assert_allclose(sketch[..., 0], sketch[..., 2], atol=1e-5)  # gray strokes on paper
    assert sketch[:, 0, 0].mean() > 0.8                                   # white paper in the corners


def test_styled_image_size_resizes():
    c = load_domains("styled", image_size=16, names="sketch")
    assert c.image_shape == (16, 16, 3) and c.load(0).train_images.shape[1:] == (16, 16, 3)


def test_styled_train_per_domain_is_class_balanced_seeded_and_differs_by_domain():
    _, base_y, _, base_test_y = load_digits_arrays()
    rows = [dom.train_subset(base_y, 53, i) for i in (0, 1)]
    for r in rows:   # 53 = 5 per class + 3 extra for the first classes, no repeats, sorted
        assert len(np.unique(r)) == 53 and (np.diff(r) > 0).all()
        np.testing.assert_array_equal(np.bincount(base_y[r], minlength=10), [6, 6, 6] + [5] * 7)
    np.testing.assert_array_equal(rows[0], dom.train_subset(base_y, 53, 0))   # deterministic
    assert len(np.intersect1d(rows[0], rows[1])) < 20                          # other base images per domain
    c = load_domains("styled", names="photo,art", train_per_domain=53)
    art = c.load(1)                                                             # domain index 1 in STYLE_NAMES
    np.testing.assert_array_equal(art.train_labels, base_y[rows[1]])
    np.testing.assert_array_equal(art.test_labels, base_test_y)                 # the test split stays whole
    with pytest.raises(ConfigError, match="asks 200 images of class"):
        dom.train_subset(base_y, 2000, 0)
    with pytest.raises(ConfigError, match="below one image per class"):
        load_domains("styled", train_per_domain=3)
    cfg = base_config("dm")
    cfg.domains.source, cfg.domains.train_per_domain = "rotated", 100
    with pytest.raises(ConfigError, match="applies to source=styled only"):
        validate_config(cfg)


# ------------------------------------------------------------------------------------------------------- folder
def _write_tree(root, domains=("cartoon", "photo", "sketch"), classes=("dog", "cat"), per_class=5, size=12):
    from PIL import Image
    rng = np.random.default_rng(0)
    for d in domains:
        for c in classes:
            folder = root / d / c
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (size, size + 2, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:03d}.{'png' if i % 2 else 'jpg'}")
    return root


def test_folder_domains_sorted_resized_and_split_as_domainbed(tmp_path):
    root = _write_tree(tmp_path / "pacs")
    c = load_domains("folder", root=str(root), image_size=8)
    assert c.domains == ("cartoon", "photo", "sketch") and c.class_names == ("cat", "dog")
    assert c.image_shape == (8, 8, 3) and c.name == "folder_pacs"
    d = c.load(1)
    assert len(d.test_labels) == 2 and len(d.train_labels) == 8            # int(0.2 * 10) held out
    train_idx, test_idx = dom.domainbed_split(10, dom.seed_hash(0, "photo"))
    labels = np.repeat([0, 1], 5)                                          # ImageFolder order: cat then dog
    np.testing.assert_array_equal(d.train_labels, labels[train_idx])
    np.testing.assert_array_equal(d.test_labels, labels[test_idx])
    from PIL import Image
    first = Image.open(root / "photo" / "cat" / "000.jpg").convert("RGB").resize((8, 8), Image.BILINEAR)
    position = int(np.flatnonzero(test_idx == 0)[0]) if 0 in test_idx else None
    split, row = (d.test_images, position) if position is not None else (d.train_images,
                                                                          int(np.flatnonzero(train_idx == 0)[0]))
    np.testing.assert_allclose(d.to_pixels(split[row]), np.asarray(first, np.float32) / 255, atol=1e-5)
    np.testing.assert_array_equal(c.load_test(1)[0], d.test_images)
    other = load_domains("folder", root=str(root), image_size=8, names="sketch,photo")
    np.testing.assert_array_equal(other.load(1).train_images, d.train_images)   # split keyed by name, not order
    assert not np.array_equal(dom.domainbed_split(10, dom.seed_hash(1, "photo"))[1], test_idx)


def test_domainbed_split_matches_its_definition():
    keys = list(range(7))
    np.random.RandomState(5).shuffle(keys)
    train, test = dom.domainbed_split(7, 5)
    assert test.tolist() == keys[:1] and train.tolist() == keys[1:]


def test_folder_errors_are_one_line(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_domains("folder", root=str(tmp_path / "nowhere"))
    root = _write_tree(tmp_path / "a", domains=("x", "y"))
    (root / "y" / "bird").mkdir()
    with pytest.raises(ConfigError, match=r"class folders of domain 'y' differ .*extra: bird"):
        load_domains("folder", root=str(root))
    root = _write_tree(tmp_path / "b", domains=("x", "y"))
    for f in (root / "y" / "cat").iterdir():
        f.unlink()
    c = load_domains("folder", root=str(root))
    with pytest.raises(DataNotFoundError, match=r"y/cat has no \.png/\.jpg image") as info:
        c.load(1)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(source="shifted"), ConfigError, "unknown domains.source 'shifted'; valid choices: rotated, styled"),
    (dict(source="rotated", base="cifar10"), ConfigError, "unknown domains.base dataset 'cifar10'"),
    (dict(source="styled", names="photo,oil"), ConfigError, "unknown domain of styled_digits 'oil'; valid choices: "
                                                            "photo, art, cartoon, sketch"),
    (dict(source="styled", names="photo,photo"), ConfigError, "repeats a domain"),
    (dict(source="styled", num_domains=5), ConfigError, "num_domains=5 but styled_digits has 4"),
    (dict(source="rotated", angle_step=0.0), ConfigError, "angle_step must be a positive"),
    (dict(source="rotated", order="shuffled"), ConfigError, "unknown domains.order 'shuffled'"),
])
def test_bad_domain_arguments_are_one_line(kwargs, error, message):
    with pytest.raises(error, match=message) as info:
        load_domains(**kwargs)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------------------- config
def test_domains_config_is_off_by_default_and_validated():
    c = base_config("dm")
    assert c.domains.source == ""
    validate_config(c)
    c.domains.source = "rotated"
    validate_config(c)
    for field, value, message in (("plan", "cumulative", "unknown domains.plan 'cumulative'"),
                                  ("source", "warped", "unknown domains.source 'warped'"),
                                  ("num_domains", -1, "domains.num_domains must be >= 0"),
                                  ("test_per_class", -2, "domains.test_per_class must be >= 0")):
        bad = base_config("dm")
        bad.domains.source = "rotated"
        bad.domains[field] = value
        with pytest.raises(ConfigError, match=message):
            validate_config(bad)


# ---------------------------------------------------------------------------------------------- plans, metrics
def test_plans():
    s = continual.make_plan("stream", 3)
    assert [p.train for p in s] == [(0,), (1,), (2,)] and [p.fresh for p in s] == [True, False, False]
    assert all(p.evaluate == (0, 1, 2) and p.eval_sets == (k,) for k, p in enumerate(s))
    j = continual.make_plan("joint", 3)
    assert [p.train for p in j] == [(0,), (0, 1), (0, 1, 2)] and all(p.fresh for p in j)
    g = continual.make_plan("gather", 3)
    assert [p.train for p in g] == [(0,), (1,), (2,)] and [p.eval_sets for p in g] == [(0,), (0, 1), (0, 1, 2)]
    loo = continual.make_plan("leave_one_out", 3)
    assert [p.train for p in loo] == [(1, 2), (0, 2), (0, 1)] and [p.evaluate for p in loo] == [(0,), (1,), (2,)]
    for p in loo:
        assert not set(p.train) & set(p.evaluate)                          # never trains on the held-out domain
    w = continual.make_plan("whole", 3)
    assert [p.train for p in w] == [(0,), (0, 1), (0, 1, 2)] and all(p.real and p.fresh for p in w)
    assert all(p.evaluate == (0, 1, 2) and p.eval_sets == () for p in w)
    assert not any(p.real for name in ("stream", "joint", "gather", "leave_one_out")
                   for p in continual.make_plan(name, 3))
    with pytest.raises(ConfigError, match="plan 'stream' needs at least 2 domains, got 1"):
        continual.make_plan("stream", 1)


def test_average_accuracy_and_forgetting_by_hand():
    a = np.array([[0.9, 0.5, 0.2],
                  [0.6, 0.8, 0.4],
                  [0.3, 0.7, 0.9]])
    assert continual.average_accuracy(a) == pytest.approx((0.3 + 0.7 + 0.9) / 3)          # eq. 18
    assert continual.average_accuracy(a, 2) == pytest.approx((0.6 + 0.8) / 2)
    # eq. 19, T = 3: domain 1: max(0.9, 0.6) - 0.3 = 0.6; domain 2: max(0.5, 0.8) - 0.7 = 0.1
    assert continual.average_forgetting(a) == pytest.approx((0.6 + 0.1) / 2)
    assert continual.average_forgetting(a, 2) == pytest.approx(0.9 - 0.6)
    assert np.isnan(continual.average_forgetting(a, 1))
    np.testing.assert_allclose(continual.accuracy_curve(a), [0.9, 0.7, (0.3 + 0.7 + 0.9) / 3])
    assert continual.segment_accuracy(a, 2, 3) == pytest.approx(0.8)
    with pytest.raises(ConfigError, match="phases <= domains"):
        continual.average_accuracy(np.zeros((3, 2)))


# ------------------------------------------------------------------------------------------------------ layering
def _imported_modules(tree) -> set[str]:
    import ast
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def test_no_module_under_ddjax_imports_launch():
    """The library does not depend on the launcher (lazy, function-level imports included)."""
    import ast
    import pathlib

    import ddjax
    root = pathlib.Path(ddjax.__file__).parent
    files = sorted(root.rglob("*.py"))
    assert len(files) > 20                                      # the scan really walks the package
    offenders = [f"{p.relative_to(root.parent)}: {m}" for p in files
                 for m in _imported_modules(ast.parse(p.read_text(), str(p)))
                 if m == "launch" or m.startswith("launch.")]
    assert offenders == []
    # the scan sees a lazy import inside a function
    assert "launch.domains" in _imported_modules(ast.parse("def f():\n    from launch.domains import x\n"))


def test_collection_from_config_is_one_function_for_library_and_launcher():
    from ddjax.data import collection_from_config
    from launch import domains as launch_domains
    assert launch_domains.collection_from_config is collection_from_config
    config = base_config("dm")
    config.domains.source, config.domains.base, config.domains.names = "styled", "digits", "sketch,photo"
    collection = collection_from_config(config)
    assert collection.domains == ("sketch", "photo") and collection.image_shape == (8, 8, 3)


def test_test_per_class_keeps_the_first_images_of_each_class():
    """``domains.test_per_class``: every domain's test split is the first n images of each class, in split order;
    the train split is untouched."""
    from ddjax.data import collection_from_config
    labels = np.asarray([2, 0, 1, 0, 2, 2, 1, 0, 0, 1])
    np.testing.assert_array_equal(dom.test_subset(labels, 2), [0, 1, 2, 3, 4, 6])
    config = base_config("dm")
    config.domains.source, config.domains.base, config.domains.num_domains = "rotated", "digits", 2
    full = collection_from_config(config)
    config.domains.test_per_class = 3
    small = collection_from_config(config)
    full_x, full_y = full.load_test(1)
    x, y = small.load_test(1)
    keep = np.concatenate([np.flatnonzero(full_y == c)[:3] for c in range(full.num_classes)])
    np.testing.assert_array_equal(np.sort(keep), dom.test_subset(full_y, 3))
    np.testing.assert_array_equal(y, full_y[np.sort(keep)])
    np.testing.assert_array_equal(x, full_x[np.sort(keep)])
    assert np.bincount(y).tolist() == [3] * full.num_classes
    assert small.load(0).train_labels.shape == full.load(0).train_labels.shape
