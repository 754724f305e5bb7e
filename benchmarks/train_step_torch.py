# PyTorch reference for one plain training step of ConvNet-3 (issue 17): the first-order step that the evaluation
# trainer, SATM's truncated steps and DC/IDC's network updates repeat, without the meta-gradient around it. Same work
# as `bench_dm.py --what=train_step`: ConvNet-3 (w128, GroupNorm(C, C) "instancenorm", ReLU, avgpool, linear head) on
# one batch of random stand-in images, cross-entropy, backward to the parameters, plain SGD (lr 0.01), no
# augmentation. The first conv pads by 1; ddjax's ConvNet pads 28x28 inputs by 3, so compare at HW 32 (or any HW
# but 28), width 128, depth 3, instance norm: bench_dm.py's defaults.
# Usage: train_step_torch.py CHANNELS HW BATCH [CLASSES] [REPEATS] -> one JSON line with the median seconds per step.
# Set-up: a separate virtualenv with `pip install torch numpy`; torch is not a dependency of ddjax.
import json
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(2)
C, HW, B = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
K = int(sys.argv[4]) if len(sys.argv) > 4 else 10
REPEATS = int(sys.argv[5]) if len(sys.argv) > 5 else 15
W, DEPTH = 128, 3

layers, size = [], HW
for i in range(DEPTH):
    layers += [nn.Conv2d(C if i == 0 else W, W, 3, padding=1), nn.GroupNorm(W, W, affine=True), nn.ReLU(),
               nn.AvgPool2d(2, 2)]
    size //= 2
net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(W * size * size, K))
torch.manual_seed(0)
x, y = torch.randn(B, C, HW, HW), torch.randint(0, K, (B,))


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, as ``common.cpu_model`` records it for ddjax's rows (common.py
    imports jax, which the PyTorch virtualenv does not have)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        return ""


def step():
    net.zero_grad(set_to_none=True)
    loss = F.cross_entropy(net(x), y)
    loss.backward()
    with torch.no_grad():
        for p in net.parameters():
            p -= 0.01 * p.grad
    return loss


for _ in range(3):
    step()
ts = []
for _ in range(REPEATS):
    t = time.perf_counter()
    step()
    ts.append(time.perf_counter() - t)
ts.sort()
print(json.dumps({"impl": "torch-eager", "benchmark": "train_step", "channels": C, "hw": HW, "batch": B,
                  "classes": K, "width": W, "depth": DEPTH, "median_s": round(ts[len(ts) // 2], 5),
                  "min_s": round(ts[0], 5), "repeats": REPEATS, "torch": torch.__version__,
                  "ld_preload": os.environ.get("LD_PRELOAD", ""), "cpu_model": cpu_model()}))
