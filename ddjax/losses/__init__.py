"""Pure matching losses: small, documented, safe under ``jit``/``vmap``/``grad`` (docs/losses.md has examples).

Each takes arrays (features on the last axis, or NHWC feature maps) and returns a value per leading batch index
(a scalar for one set); the ``*_per_class`` forms sum over a leading class axis, so an algorithm step computes
every class in one program.

- :func:`mean_embedding_distance` — DM: ``‖mean(real) − mean(syn)‖²``.
- :func:`gaussian_mmd` — M3D: squared MMD with a sum of Gaussian kernels (median-heuristic bandwidths by default).
- :func:`feature_covariance`, :func:`covariance_matching` — IID's local-feature covariance and its matching.
- :func:`class_centralization` — IID's pull of a class's embeddings towards their mean (exp or squared form).
- :func:`channel_style`, :func:`domain_style`, :func:`set_style`, :func:`normalized_style_loss` — DD for DG's
  per-image and per-domain styles and its normalised style loss (eqs. 4-9).
- :func:`bn_statistics_loss` — SRe2L's match of a batch's statistics to a BN layer's running statistics.
- :func:`channel_style`, :func:`domain_style`, :func:`set_style`, :func:`normalized_style_loss` — DD for DG's
  per-image and per-domain styles and its normalised style loss (eqs. 4-9).
- :func:`bn_statistics_loss` — SRe2L's match of a batch's statistics to a BN layer's running statistics.
"""
from ddjax.losses.distribution import (DEFAULT_BANDWIDTH_SCALES, gaussian_mmd, gaussian_mmd_per_class,
                                       mean_embedding_distance, mean_embedding_distance_per_class,
                                       median_bandwidth, squared_distances)
from ddjax.losses.relations import (CENTRALIZATION_FORMS, class_centralization, class_centralization_per_class,
                                    covariance_matching, covariance_matching_per_class, feature_covariance)

from ddjax.losses.style import (STYLE_EPS, bn_statistics_loss, channel_style, domain_style,
                                normalized_style_loss, set_style)
from ddjax.losses.gradient import (GRADIENT_LAYERS, GRADIENT_METRICS, check_gradient_metric,
                                   gradient_matching_distance, gradient_matching_distance_per_class)

__all__ = ["GRADIENT_LAYERS", "GRADIENT_METRICS", "check_gradient_metric", "gradient_matching_distance",
           "gradient_matching_distance_per_class", "CENTRALIZATION_FORMS", "DEFAULT_BANDWIDTH_SCALES", "class_centralization",
           "class_centralization_per_class", "covariance_matching", "covariance_matching_per_class",
           "feature_covariance", "gaussian_mmd", "gaussian_mmd_per_class", "mean_embedding_distance",
           "mean_embedding_distance_per_class", "median_bandwidth", "squared_distances",
           "STYLE_EPS", "bn_statistics_loss", "channel_style", "domain_style", "normalized_style_loss", "set_style"]
