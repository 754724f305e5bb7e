"""DC on Fashion-MNIST with the reference hyper-parameters (Zhao et al., ICLR'21; DatasetCondensation/main.py).

python -m launch.main --config=configs/dc_fmnist.py:10     # the argument is the IPC: 1, 10 or 50
Reference: 1,000 iterations (one ddjax step = one iteration = one fresh network and its outer_loop matching
rounds, DC's get_loops: 1->(1,1), 10->(10,50), 50->(50,10)), lr_img 0.1 (SGD momentum 0.5), batch_real 256, lr_net
0.01, metric 'ours' (layerwise_cos), init from noise, evaluation 300 epochs without augmentation.
Paper (DREAM+ Table 1, ConvNet-3): 70.5 / 82.3 / 83.6 for IPC 1 / 10 / 50.
Needs the Fashion-MNIST IDX files: apt-get install dataset-fashion-mnist (or --config.data.source_dir=DIR).
"""
from launch.config import base_config


def get_config(ipc: str = "10"):
    config = base_config("dc")
    config.data.name = "fashion_mnist"
    config.ipc = int(ipc)
    config.init = "noise"
    config.steps = 1000
    config.log_every = 10
    config.checkpoint_every = 50
    config.model.width = 128
    config.model.depth = 3
    config.dc.lr_img = 0.1
    config.dc.batch_real = 256
    config.eval.dsa_strategy = "none"
    config.eval.every = 200
    config.eval.num_seeds = 5
    config.eval.epochs = 300
    return config
