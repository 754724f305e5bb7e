# PyTorch reference SATM outer step (issue 17: "SATM (N = 20) <= 0.5x the PyTorch reference"). The SATM authors
# publish no code, so this restates ddjax's SATM step (docs/design.md, "Trajectory matching"; SATM §3.2-3.3 and
# eq. 12) in eager PyTorch on the same stand-in work as ../shared/bench/mtt_torch.py (ConvNet-3 w128, GroupNorm(C, C)
# "instancenorm", avgpool, run functionally on a flat parameter vector; flip + translation augmentation; random
# stand-in images and expert snapshot):
#   1. landscape smoothing: x~ = phi + n, n_j ~ N(0, (gamma ||phi_j||)^2) per pixel of image j;
#   2. first unroll from theta_0 on x~: N SGD steps, the first iota without a graph (truncation), theta_tau recorded
#      (tau = iota, trajectory reuse), the last N - iota with create_graph; loss ||theta_N - theta*||^2 / ||theta_0 - theta*||^2;
#      one backward to the images (the ascent direction g);
#   3. eps = rho ||phi|| g / ||g|| (relative rho, ddjax's default);
#   4. second unroll from theta_tau on phi + eps, replaying the first unroll's batches and augmentations for steps
#      tau..N-1 with create_graph; its backward to the images is the descent gradient;
#   5. syn_lr's first-order gradient (eq. 12): (d loss / d theta_N) . (-sum_i grad L_CE(theta_i)) from the first unroll;
#   6. SGD(momentum 0.5) on the images and syn_lr.
# Usage: satm_torch.py CHANNELS HW IPC SYN_STEPS [BATCH_SYN] [CLASSES] [IOTA] [RHO] [GAMMA] -> one JSON line with the
# median seconds per outer step. IOTA defaults to N - N // 3 (ddjax's default), RHO to 0.02, GAMMA to 0.01.
# Set-up: a separate virtualenv with `pip install torch numpy`; torch is not a dependency of ddjax.
import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

torch.set_num_threads(2)
C, HW, IPC, N = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
K = int(sys.argv[6]) if len(sys.argv) > 6 else 10
B = int(sys.argv[5]) if len(sys.argv) > 5 and int(sys.argv[5]) > 0 else K * IPC
IOTA = int(sys.argv[7]) if len(sys.argv) > 7 else N - N // 3
RHO = float(sys.argv[8]) if len(sys.argv) > 8 else 0.02
GAMMA = float(sys.argv[9]) if len(sys.argv) > 9 else 0.01
assert 0 <= IOTA < N, f"IOTA={IOTA} must be in [0, SYN_STEPS={N})"


class ConvNet(nn.Module):
    def __init__(s, c, w=128, d=3, n=K, hw=HW):
        super().__init__()
        layers = []
        for i in range(d):
            layers += [nn.Conv2d(c if i == 0 else w, w, 3, padding=1), nn.GroupNorm(w, w, affine=True), nn.ReLU(),
                       nn.AvgPool2d(2, 2)]
            hw //= 2
        s.f = nn.Sequential(*layers)
        s.fc = nn.Linear(w * hw * hw, n)

    def forward(s, x):
        return s.fc(s.f(x).flatten(1))


net = ConvNet(C)
names = [n for n, _ in net.named_parameters()]
shapes = [p.shape for _, p in net.named_parameters()]
sizes = [p.numel() for _, p in net.named_parameters()]


def unflat(flat):
    return {n: t.view(s) for n, t, s in zip(names, torch.split(flat, sizes), shapes)}


def draw_batch():
    """One inner step's randomness (minibatch, per-sample flip, translation), kept so the second unroll replays it."""
    s = int(HW * 0.125 + 0.5)
    return torch.randperm(K * IPC)[:B], torch.rand(B, 1, 1, 1) < 0.5, torch.randint(-s, s + 1, (2,)).tolist()


def augment(x, flip, shift):
    return torch.roll(torch.where(flip, x.flip(3), x), tuple(shift), (2, 3))


def ce_grad(theta, images, batch, create_graph):
    idx, flip, shift = batch
    out = functional_call(net, unflat(theta), (augment(images[idx], flip, shift),))
    return torch.autograd.grad(F.cross_entropy(out, labels[idx]), theta, create_graph=create_graph)[0]


start = torch.cat([p.detach().flatten() for p in net.parameters()])
target = start + 0.01 * torch.randn_like(start)           # stand-in for the expert snapshot M epochs later
denom = ((start - target) ** 2).sum()
syn = torch.randn(K * IPC, C, HW, HW, requires_grad=True)
labels = torch.arange(K).repeat_interleave(IPC)
syn_lr = torch.tensor(0.01, requires_grad=True)
opt_img = torch.optim.SGD([syn], lr=1000.0, momentum=0.5)
opt_lr = torch.optim.SGD([syn_lr], lr=1e-5, momentum=0.5)


def unroll(images, theta, batches, first):
    """SGD steps ``first..N-1`` from ``theta``; steps below IOTA carry no graph. Returns θ_N, θ_IOTA, Σ∇L_CE."""
    lr, grad_sum, theta_tau = syn_lr.detach(), torch.zeros_like(start), None
    for i in range(first, N):
        if i == IOTA:
            theta_tau = theta.detach()
        differentiated = i >= IOTA
        if not differentiated or i == IOTA:   # a fresh leaf: the graph starts at θ_IOTA
            theta = theta.detach().requires_grad_(True)
        g = ce_grad(theta, images if differentiated else images.detach(), batches[i], differentiated)
        grad_sum = grad_sum + g.detach()
        theta = theta - lr * g if differentiated else (theta - lr * g).detach()
    return theta, theta_tau, grad_sum


def step():
    batches = [draw_batch() for _ in range(N)]
    phi = syn.detach()
    norms = phi.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    smoothed = (phi + GAMMA * norms * torch.randn_like(phi)).requires_grad_(True)
    theta_n, theta_tau, grad_sum = unroll(smoothed, start.clone().requires_grad_(True), batches, 0)
    loss = ((theta_n - target) ** 2).sum() / denom
    g_ascent, = torch.autograd.grad(loss, smoothed)
    eps = RHO * phi.norm() * g_ascent / g_ascent.norm().clamp_min(1e-12)
    perturbed = (phi + eps).requires_grad_(True)
    theta_n2, _, _ = unroll(perturbed, theta_tau.requires_grad_(True), batches, IOTA)
    loss_perturbed = ((theta_n2 - target) ** 2).sum() / denom
    g_descent, = torch.autograd.grad(loss_perturbed, perturbed)
    g_lr = -(2.0 * (theta_n.detach() - target) / denom).dot(grad_sum)   # eq. 12, first order
    opt_img.zero_grad(); opt_lr.zero_grad()
    syn.grad, syn_lr.grad = g_descent, g_lr.reshape(())
    opt_img.step(); opt_lr.step()
    return float(loss.detach()), float(loss_perturbed.detach())


for _ in range(1):
    step()
ts = []
for _ in range(3):
    t = time.perf_counter(); step(); ts.append(time.perf_counter() - t)
ts.sort()
print(json.dumps({"impl": "torch-eager", "algo": "satm", "channels": C, "hw": HW, "ipc": IPC, "syn_steps": N,
                  "iota": IOTA, "tau": IOTA, "rho_relative": RHO, "noise_gamma": GAMMA, "batch_syn": B, "classes": K,
                  "median_s": round(ts[len(ts) // 2], 4), "min_s": round(ts[0], 4), "torch": torch.__version__}))
