"""Losses. Inputs are logits (networks never apply activations); targets as documented."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def centernet_focal_loss(logits: torch.Tensor, heat: torch.Tensor, alpha: float = 2.0, beta: float = 4.0) -> torch.Tensor:
    """Penalty-reduced focal loss of CenterNet. ``logits``, ``heat``: (B, 1, D, H, W); heat 1 at centres.

    Normalised by the number of centres (at least 1).
    """
    logits, heat = logits.float(), heat.float()
    pos = heat >= 0.999
    log_p, log_1mp = F.logsigmoid(logits), F.logsigmoid(-logits)
    p = torch.sigmoid(logits)
    pos_loss = -(log_p * (1 - p) ** alpha)[pos].sum()
    neg_loss = -(log_1mp * p ** alpha * (1 - heat) ** beta)[~pos].sum()
    return (pos_loss + neg_loss) / pos.sum().clamp(min=1)


def detection_loss(out: torch.Tensor, heat, reg, reg_mask, reg_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
    """``out`` (B, 5, D, H, W): heat logit, log diameter, offset z, y, x (det voxels).

    Focal loss on the heat map plus masked L1 on size and offset. Returns (loss, parts).
    """
    focal = centernet_focal_loss(out[:, :1], heat)
    n = reg_mask.sum().clamp(min=1)
    l1 = (out[:, 1:].float() - reg).abs() * reg_mask
    size, offset = l1[:, :1].sum() / n, l1[:, 1:].sum() / (3 * n)
    loss = focal + reg_weight * (size + offset)
    return loss, {"focal": float(focal.detach()), "size": float(size.detach()), "offset": float(offset.detach())}


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> tuple[torch.Tensor, dict]:
    """Binary cross-entropy (mean over voxels) + soft Dice over the whole batch. Shapes (B, 1, D, H, W)."""
    logits, target = logits.float(), target.float()
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    dice = (2 * (p * target).sum() + smooth) / (p.sum() + target.sum() + smooth)
    return bce + (1 - dice), {"bce": float(bce.detach()), "dice": float(dice.detach())}
