"""Linear probes on frozen features, trained in torch, scored on held-out data.

``linear_probe``: standardised features, softmax regression, full-batch Adam (quick, small data).
``official_linear_probe``: the official LQAE probe head (``lqae/main/linear_main.py``): LayerNorm then
a linear layer, trained with LARS (momentum 0.9, trust coefficient 0.001, weight decay 1e-4) on
mini-batches with a warm-up and cosine learning-rate schedule.
"""

from __future__ import annotations

import math

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


class LARS(torch.optim.Optimizer):
    """LARS as ``optax.lars`` composes it: add decayed weights, scale each parameter's update by the
    trust ratio ``trust_coefficient * |p| / |update|`` (1 where either norm is 0), scale by the
    learning rate, then heavy-ball momentum."""

    def __init__(self, params, lr: float, *, weight_decay: float = 1e-4, momentum: float = 0.9,
                 trust_coefficient: float = 0.001) -> None:
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum,
                                      trust_coefficient=trust_coefficient))

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad + group["weight_decay"] * p
                p_norm, u_norm = p.norm(), update.norm()
                ratio = group["trust_coefficient"] * p_norm / u_norm
                update = update * torch.where((p_norm == 0) | (u_norm == 0), torch.ones_like(ratio), ratio)
                trace = self.state[p].setdefault("trace", torch.zeros_like(p))
                trace.mul_(group["momentum"]).add_(update, alpha=group["lr"])
                p.sub_(trace)


def official_linear_probe(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                          test_labels: torch.Tensor, *, epochs: int = 90, batch_size: int = 256, lr: float = 1.0,
                          warmup_epochs: int = 5, weight_decay: float = 1e-4, seed: int = 0) -> float:
    """Accuracy in [0, 1] of the official probe head (LayerNorm + linear, LARS) on frozen features.

    Args:
        train_features / test_features: float ``[n, F]`` (e.g. ``ImageTokenizer.features(x, layers="all")``).
        train_labels / test_labels: int64 ``[n]`` in ``[0, C)``.
        epochs, batch_size, lr, warmup_epochs, weight_decay: the schedule; ``lr`` is the peak rate
            (LARS scales each step by ``0.001 |w| / |g|``, so it is much larger than an SGD rate).
    """
    if train_features.dim() != 2 or test_features.dim() != 2 or train_features.shape[1] != test_features.shape[1]:
        raise ValueError(f"features must be [n, F] with equal F, got {list(train_features.shape)} and "
                         f"{list(test_features.shape)}")
    if len(train_labels) != len(train_features) or len(test_labels) != len(test_features):
        raise ValueError("each feature row needs exactly one label")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    classes = int(max(train_labels.max(), test_labels.max())) + 1
    head = torch.nn.Sequential(torch.nn.LayerNorm(train_features.shape[1]),
                               torch.nn.Linear(train_features.shape[1], classes))
    optimizer = LARS(head.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = max(1, -(-len(train_features) // batch_size))
    total, warmup = epochs * steps_per_epoch, warmup_epochs * steps_per_epoch
    schedule = lambda s: (s + 1) / max(1, warmup) if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup)))  # noqa: E731
    x, y = train_features.float(), train_labels.long()
    step = 0
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for start in range(0, len(x), batch_size):
            batch = order[start : start + batch_size]
            for group in optimizer.param_groups:
                group["lr"] = lr * schedule(step)
            optimizer.zero_grad()
            F.cross_entropy(head(x[batch]), y[batch]).backward()
            optimizer.step()
            step += 1
    with torch.no_grad():
        predictions = head(test_features.float()).argmax(1)
    return float((predictions == test_labels).float().mean())
