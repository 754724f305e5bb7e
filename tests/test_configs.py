"""Every shipped config loads, passes validation and builds its algorithm, on one device and on the 8 simulated
devices of the test-suite (batch sizes must split over the mesh); no data loaded, nothing compiled."""
import glob
import os

import pytest

from ddjax import algorithms, models
from ddjax.sharding import make_mesh
from launch.config import validate_config
from repo_files import REPO, load_module
CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "*.py")))
SHAPES = {"digits": (8, 8, 1), "fashion_mnist": (28, 28, 1)}


def _variants(path):
    name = os.path.basename(path)[:-3]
    if name.endswith("_fmnist"):
        return ["1", "10", "50"]
    return [None]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.basename(p))
def test_config_validates_and_builds(path):
    assert len(CONFIGS) >= 10
    module = load_module(path)
    for arg in _variants(path):
        config = module.get_config() if arg is None else module.get_config(arg)
        validate_config(config)
        m = config.model
        model = models.build_model(m.name, 10, width=m.width, depth=m.depth, norm=m.norm, pooling=m.pooling)
        for mesh in (None, make_mesh()):
            algo = algorithms.get_algorithm(config, model, 10, SHAPES[config.data.name], mesh=mesh)
            assert callable(algo.init) and callable(algo.step)
