"""The linear probe every evaluation is read against.

Multinomial logistic regression on each file's mean-pooled encoder frames, standardised
on the fold's training part, L2-regularised, fitted with L-BFGS on the same folds and with
the same masked cross-entropy as the regressors (each file's softmax restricted to the
emotions its corpus labels). What a head adds over it is what the head is worth.
"""

from __future__ import annotations

import numpy as np
import torch

from .train import masked_loss


def probe_predict(
    means: torch.Tensor, targets: np.ndarray, masks: np.ndarray, train: np.ndarray, test: np.ndarray, l2: float = 1e-3
) -> np.ndarray:
    """Shares (len(test), E) from a probe fitted on `train`: means (N, D) mean-pooled
    frames, targets (N, E) shares, masks (N, E) the emotions each file's corpus labels."""
    x_tr = means[torch.as_tensor(train)].double()
    mu, sd = x_tr.mean(0), x_tr.std(0).clamp(min=1e-5)
    x_tr = (x_tr - mu) / sd
    t = torch.as_tensor(targets[train], dtype=torch.float64)
    m = torch.as_tensor(masks[train])
    w = torch.zeros(means.shape[1], targets.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(targets.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = masked_loss((x_tr @ w + b).softmax(-1), t, m, "ce") + l2 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        x = (means[torch.as_tensor(test)].double() - mu) / sd
        return (x @ w + b).softmax(-1).float().numpy()
