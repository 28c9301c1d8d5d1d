"""Weight initialisation of the official InvP models (docs/methods/invp.md §Networks)."""
from __future__ import annotations

from torch import nn


def init_weights(module: nn.Module) -> nn.Module:
    """Kaiming-normal (fan_out, ReLU) convolutions, Xavier-uniform linear layers with zero bias,
    BatchNorm weight 1 and bias 0. Returns ``module``."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return module
