"""LeNet-5 as used in the interventional-explanation research code.

The network is an ``nn.Sequential`` of named modules (``conv1, relu1, pool1, conv2,
relu2, pool2, flatten, fc1, relu3, fc2, relu4, fc3``) so that interventions and
reports can address any layer by name and ``model[: i + 1]`` gives the prefix up
to a layer.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from explainnn.errors import ConfigError

KERNEL = 5
POOL = 2
MIN_INPUT = 16
"""Smallest side that survives conv(5) -> pool(2) -> conv(5) -> pool(2)."""


def _side_after_features(side: int) -> int:
    return ((side - KERNEL + 1) // POOL - KERNEL + 1) // POOL


def _as_hw(input_size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(input_size, int) and not isinstance(input_size, bool):
        return input_size, input_size
    if (
        isinstance(input_size, (tuple, list))
        and len(input_size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) for s in input_size)
    ):
        return int(input_size[0]), int(input_size[1])
    raise ConfigError(f"LeNet input_size must be an int or (height, width); got {input_size!r}")


class LeNet(nn.Sequential):
    """LeNet-5: two conv/ReLU/max-pool blocks and three fully connected layers.

    ``input_size`` is the image side (or ``(H, W)``); each side must be at least
    16 pixels. Small images such as the 8x8 ``digits`` are loaded with
    ``image_size=32`` (or any size >= 16) instead of being padded inside the model.
    """

    def __init__(
        self,
        in_channels: int = 1,
        input_size: int | tuple[int, int] = 32,
        n_classes: int = 10,
    ) -> None:
        height, width = _as_hw(input_size)
        for label, value in (("in_channels", in_channels), ("n_classes", n_classes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"LeNet {label} must be a positive integer; got {value!r}")
        if min(height, width) < MIN_INPUT:
            raise ConfigError(
                f"LeNet needs images of at least {MIN_INPUT}x{MIN_INPUT} pixels; got "
                f"{height}x{width}; load the dataset with image_size: 32"
            )
        flat = 16 * _side_after_features(height) * _side_after_features(width)
        super().__init__(
            OrderedDict(
                [
                    ("conv1", nn.Conv2d(in_channels, 6, KERNEL)),
                    ("relu1", nn.ReLU()),
                    ("pool1", nn.MaxPool2d(POOL)),
                    ("conv2", nn.Conv2d(6, 16, KERNEL)),
                    ("relu2", nn.ReLU()),
                    ("pool2", nn.MaxPool2d(POOL)),
                    ("flatten", nn.Flatten()),
                    ("fc1", nn.Linear(flat, 120)),
                    ("relu3", nn.ReLU()),
                    ("fc2", nn.Linear(120, 84)),
                    ("relu4", nn.ReLU()),
                    ("fc3", nn.Linear(84, n_classes)),
                ]
            )
        )
        self.in_channels = in_channels
        self.input_size = (height, width)
        self.n_classes = n_classes

    def __getitem__(self, index: int | slice | str) -> nn.Module:
        """``model[i]``, ``model["fc2"]`` or ``model[a:b]`` (a plain ``nn.Sequential`` sharing the layers)."""
        if isinstance(index, str):
            if index not in self._modules:
                raise ConfigError(f"unknown layer '{index}'; valid layers: {', '.join(self._modules)}")
            return self._modules[index]
        if isinstance(index, slice):
            return nn.Sequential(OrderedDict(list(self._modules.items())[index]))
        return super().__getitem__(index)
