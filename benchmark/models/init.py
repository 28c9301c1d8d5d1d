"""Weight initialisation of the backbones and heads (``model.init``), as the official code does it.

* ``kaiming_xavier``: InvP's ImageNet ResNet (``models/resnet.py``): Kaiming-normal (fan_out,
  ReLU) convolutions, Xavier-uniform linear layers with zero bias (the head too), BatchNorm
  weight 1 and bias 0.
* ``kaiming``: torchvision's ResNet, as MoCo (``main_moco.py``, ``moco/builder.py``) builds it:
  the convolutions and BatchNorm as above, every linear layer with PyTorch's default.
* ``pytorch``: every layer's PyTorch default (``reset_parameters``): InvP's CIFAR ResNet-18
  (``models/resnet_cifar.py`` has no init code).
"""
from __future__ import annotations

from torch import nn

INITS = ("kaiming_xavier", "kaiming", "pytorch")


def initialise(module: nn.Module, scheme: str) -> nn.Module:
    """Initialise every layer of ``module`` by ``scheme`` (one of :data:`INITS`); returns it."""
    if scheme not in INITS:
        raise ValueError(f"model.init={scheme!r}; valid schemes: {', '.join(INITS)}")
    for m in module.modules():
        if scheme == "pytorch" or (isinstance(m, nn.Linear) and scheme == "kaiming"):
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
        elif isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return module
