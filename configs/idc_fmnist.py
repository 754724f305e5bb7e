"""IDC on Fashion-MNIST (Kim et al., ICML'22; snu-mllab/Efficient-Dataset-Condensation).

python -m launch.main --config=configs/idc_fmnist.py:10     # the argument is the IPC: 1, 10 or 50
Multi-formation factor 2 (28x28 -> four 14x14 images per stored image, init 'mix'), 100 matching rounds per network
with 500 real images of network training (CutMix p 0.5) after each, batch_real 64, metric l1 on conv kernels,
matching augmentation color_crop_cutout. Iterations: the reference's niter 2,000 (n_iter = niter*100/inner_loop).
Image learning rate: IDC's reproduce.py value for Fashion-MNIST, 1e-4 on [0, 1] pixels scaled by ipc/10 x (28/32)^2
(tune_lr_img), converted to ddjax's normalised images by 1/std^2 (idc_image_lr): 6.1e-5 / 6.1e-4 / 3.1e-3 at IPC
1 / 10 / 50.
Evaluation: IDC's protocol (1,000 epochs, batch 64, x0.2 at 2/3 and 5/6, IDC's DiffAug, CutMix p 0.5).
Paper (DREAM+ Table 1, ConvNet-3): 81.0 / 86.0 / 86.2 for IPC 1 / 10 / 50.
"""
from ddjax.algorithms.multiformation import idc_image_lr
from launch.config import base_config, use_idc_evaluation

#: Fashion-MNIST train-split pixel std (ddjax.data normalises with it; tests/test_fidelity.py checks the value).
FASHION_MNIST_STD = 0.35302424
#: IDC's misc/reproduce.py lr_img for 'fashion' (DREAM's --reproduce uses the same), before tune_lr_img.
LR_IMG_PIXEL = 1e-4


def get_config(ipc: str = "10"):
    config = base_config("idc")
    config.data.name = "fashion_mnist"
    config.ipc = int(ipc)
    config.steps = 2000
    config.log_every = 10
    config.checkpoint_every = 50
    config.model.width = 128
    config.model.depth = 3
    i = config.idc
    i.factor = 2
    i.metric = "l1"
    i.lr_img = idc_image_lr(LR_IMG_PIXEL, config.ipc, 28, FASHION_MNIST_STD)
    i.batch_real = 64
    i.inner_loop = 100
    i.n_data = 500
    i.mix_p = 0.5
    use_idc_evaluation(config)  # the protocol of the paper's numbers: IDC's train.py (ddjax.evaluate)
    config.eval.every = 200
    config.eval.num_seeds = 5
    config.eval.epochs = 1000
    return config
