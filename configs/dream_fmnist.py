"""DREAM+ on Fashion-MNIST with the paper's hyper-parameters (Liu et al., Sec. 4.1; IDC base).

python -m launch.main --config=configs/dream_fmnist.py:10     # the argument is the IPC: 1, 10 or 50
1,200 iterations (one ddjax step = one iteration = a fresh network and 100 matching rounds), SGD on the images
at the authors' rate (the paper's "0.005" is reproduce.py's CIFAR value; their command, run.sh --reproduce, gives
Fashion-MNIST IDC's 1e-4 x ipc/10 x (28/32)^2 on [0, 1] pixels, converted as configs/idc_fmnist.py), mean
absolute error (IDC's 'l1') as the matching distance for (Fashion-)MNIST, 128 representatives per
class from k-means on the current network's features, re-clustered every 10 rounds, bidirectional (gradient +
mean-feature) matching, cluster-centre initialisation; IDC's multi-formation (factor 2) and network update on real
data (500 images, CutMix p 0.5). Evaluation: IDC's protocol, 1,000 epochs (configs/idc_fmnist.py).
On a CPU add e.g. --config.dream.cluster_pool=512 (cluster a random 512 images of a class instead of all 6,000).
Paper (Table 1, ConvNet-3): 82.6 / 87.2 / 87.6 for IPC 1 / 10 / 50.
"""
from ddjax.algorithms.multiformation import idc_image_lr
from launch.config import base_config, use_idc_evaluation

FASHION_MNIST_STD = 0.35302424   # as configs/idc_fmnist.py
LR_IMG_PIXEL = 1e-4              # misc/reproduce.py 'fashion' (DREAM's copy), before tune_lr_img


def get_config(ipc: str = "10"):
    config = base_config("dream")
    config.data.name = "fashion_mnist"
    config.ipc = int(ipc)
    config.steps = 1200
    config.log_every = 10
    config.checkpoint_every = 50
    config.model.width = 128
    config.model.depth = 3
    d = config.dream
    d.base = "idc"
    d.interval = 10
    d.subsample = 1
    d.feature_weight = 1.0
    d.idc.factor = 2
    d.idc.metric = "l1"
    d.idc.lr_img = idc_image_lr(LR_IMG_PIXEL, config.ipc, 28, FASHION_MNIST_STD)
    d.idc.batch_real = 128
    d.idc.inner_loop = 100
    d.idc.n_data = 500
    d.idc.mix_p = 0.5
    use_idc_evaluation(config)  # the protocol of the paper's numbers: IDC's train.py (ddjax.evaluate)
    config.eval.every = 100
    config.eval.num_seeds = 5
    config.eval.epochs = 1000
    return config
