"""Linear probe: a linear classifier on frozen features, trained in torch, scored on held-out data."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def linear_probe(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                 test_labels: torch.Tensor, *, weight_decay: float = 1e-4, steps: int = 500, lr: float = 0.1,
                 seed: int = 0) -> float:
    """Accuracy in [0, 1] of a softmax-regression probe.

    Args:
        train_features / test_features: float ``[n, H]`` features (e.g. ``ImageTokenizer.features``).
        train_labels / test_labels: int64 ``[n]`` class indices in ``[0, C)``.
        weight_decay: L2 penalty on the weights. steps, lr: full-batch Adam iterations and rate.

    Features are standardised with the training split's mean and std (the test split never informs
    the fit).
    """
    if train_features.dim() != 2 or test_features.dim() != 2 or train_features.shape[1] != test_features.shape[1]:
        raise ValueError(f"features must be [n, H] with equal H, got {list(train_features.shape)} and "
                         f"{list(test_features.shape)}")
    if len(train_labels) != len(train_features) or len(test_labels) != len(test_features):
        raise ValueError("each feature row needs exactly one label")
    mean = train_features.double().mean(0)
    std = train_features.double().std(0).clamp_min(1e-8)
    xtr = ((train_features.double() - mean) / std).float()
    xte = ((test_features.double() - mean) / std).float()
    classes = int(max(train_labels.max(), test_labels.max())) + 1
    g = torch.Generator().manual_seed(seed)
    weight = (torch.randn(xtr.shape[1], classes, generator=g) * 0.01).requires_grad_()
    bias = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.Adam([weight, bias], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = F.cross_entropy(xtr @ weight + bias, train_labels) + weight_decay * (weight**2).sum()
        loss.backward()
        opt.step()
    with torch.no_grad():
        predictions = (xte @ weight + bias).argmax(1)
    return float((predictions == test_labels).float().mean())
