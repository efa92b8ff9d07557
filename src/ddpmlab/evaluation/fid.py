"""The Frechet distance between Gaussians fitted to features (FID, Heusel et al. 2017), here in the
features of the project's own digit classifier, with its floor: the same distance between the training
and held-out images.

    FD = ||mu_1 - mu_2||^2 + tr(S_1 + S_2 - 2 (S_1^{1/2} S_2 S_1^{1/2})^{1/2})

The trace of the matrix square root is computed from the eigenvalues of the symmetric S_1^{1/2} S_2 S_1^{1/2}
(float64), which avoids ``scipy.linalg.sqrtm``'s complex round-off.
"""
from __future__ import annotations

import torch

from ddpmlab.data.digits import NUM_CLASSES, digits_split
from ddpmlab.core.utils import DDPMLabError


def gaussian_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (k,) and covariance (k, k) of features (n, k), float64 (unbiased covariance)."""
    f = torch.as_tensor(features, dtype=torch.float64)
    if f.dim() != 2 or f.shape[0] < 2:
        raise DDPMLabError(f"Frechet distance needs at least 2 feature vectors (n, k), got shape {tuple(f.shape)}")
    return f.mean(0), torch.cov(f.T).reshape(f.shape[1], f.shape[1])


def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh((m + m.T) / 2)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """Frechet (2-Wasserstein squared) distance between N(mu1, cov1) and N(mu2, cov2)."""
    s1 = _sqrt_psd(cov1)
    inner = torch.linalg.eigvalsh(s1 @ cov2 @ s1).clamp_min(0).sqrt().sum()
    return float((mu1 - mu2).square().sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * inner)


def frechet_distance_features(f1: torch.Tensor, f2: torch.Tensor) -> float:
    return frechet_distance(*gaussian_stats(f1), *gaussian_stats(f2))


@torch.no_grad()
def evaluate_digit_samples(samples: torch.Tensor, classifier=None) -> dict:
    """Frechet distance of ``samples`` (n, 1, 8, 8), clipped to the images' range [-1, 1] as pixel values
    are, to the held-out images in the classifier's
    features, beside the floor (training images to held-out images), the class histogram of the samples,
    and the classifier's held-out accuracy. Draw as many samples as there are training images so both
    distances carry the same finite-sample bias.
    """
    if classifier is None:
        from ddpmlab.evaluation.digit_classifier import load_classifier

        classifier, accuracy = load_classifier()
    else:
        accuracy = None
    classifier.eval()
    x = torch.as_tensor(samples, dtype=torch.float32).reshape(-1, 1, 8, 8).clamp(-1.0, 1.0)  # the pixel range
    train, _ = digits_split("train")
    held, _ = digits_split("heldout")
    f_samples, f_train, f_held = (classifier.features(v) for v in (x, train, held))
    counts = torch.bincount(classifier.head(f_samples).argmax(1), minlength=NUM_CLASSES)
    return {"fd": frechet_distance_features(f_samples, f_held),
            "fd_floor": frechet_distance_features(f_train, f_held),
            "fd_to_train": frechet_distance_features(f_samples, f_train),
            "n_samples": int(x.shape[0]), "n_train": int(train.shape[0]), "n_heldout": int(held.shape[0]),
            "class_histogram": counts.tolist(), "classes_present": int((counts > 0).sum()),
            "classifier_heldout_accuracy": accuracy}
