"""Float64 numpy oracles, written loop by loop, for the style statistics (DD for DG eqs. 4-9) and SRe2L's
BN-statistics loss: shared by tests/test_style_losses.py and DTL's loss test in tests/test_decoupled.py."""
import numpy as np

from ddjax import losses

EPS = losses.STYLE_EPS


def np_channel_style(maps):
    b, h, w, c = maps.shape
    mu = np.zeros((b, c))
    sigma = np.zeros((b, c))
    for i in range(b):
        for ch in range(c):
            vals = maps[i, :, :, ch].astype(np.float64).ravel()
            mu[i, ch] = vals.sum() / (h * w)
            sigma[i, ch] = np.sqrt(((vals - mu[i, ch]) ** 2).sum() / (h * w) + EPS)
    return mu, sigma


def np_domain_style(maps):
    mu, sigma = np_channel_style(maps)
    return mu.mean(0), np.sqrt((sigma ** 2).mean(0))


def np_normalized_loss(style, target, normalize=True):
    (m, s), (mt, st) = style, target
    dm = (m - mt) / ((np.std(mt) + EPS) if normalize else 1.0)
    ds = (s - st) / ((np.std(st) + EPS) if normalize else 1.0)
    return np.mean(dm ** 2) + np.mean(ds ** 2)


def np_bn_loss(maps, rm, rv):
    flat = maps.reshape(-1, maps.shape[-1]).astype(np.float64)
    mean = flat.mean(0)
    var = ((flat - mean) ** 2).mean(0)
    return np.sqrt(((mean - rm) ** 2).sum()) + np.sqrt(((var - rv) ** 2).sum())
