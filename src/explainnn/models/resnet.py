"""ResNet-18 for small images: the CIFAR variant of He et al. (2016), "Deep Residual
Learning for Image Recognition".

The network follows the paper's 18-layer design - a stem convolution, four stages
of two basic blocks each with 1, 2, 4 and 8 times the base width, global average
pooling and one fully connected layer - with the change that is usual for 32x32
inputs: the stem is a 3x3 convolution with stride 1 and there is no max-pool, so
the stages see 32, 16, 8 and 4 pixels a side.

A basic block computes ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`` with
3x3 convolutions. The shortcut is the identity where the block keeps the shape, and
a projection (1x1 convolution with the block's stride, then batch norm; the paper's
option B) where it halves the side and doubles the channels, at the first block of
stages 2-4. Convolutions carry no bias (batch norm follows each), and are
initialised as the paper's reference (He et al. 2015: normal, fan-out, ReLU gain).

Each ReLU is its own module, used once, so captum's DeepLift and guided
backpropagation can hook every one. ``width`` (the first stage's channels, 64 in
the paper) scales the whole network: ``width=16`` has 1/16 of the weights and
trains on a CPU in minutes.
"""

from __future__ import annotations

from torch import Tensor, nn

from explainnn.errors import ConfigError

BLOCKS_PER_STAGE = (2, 2, 2, 2)
"""ResNet-18: 1 stem conv + 4 stages x 2 blocks x 2 convs + 1 fully connected layer."""


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm, added to the shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18, CIFAR variant: 3x3 stem with stride 1, no max-pool, four stages of basic blocks.

    Modules: ``conv1, bn1, relu`` (the stem), ``layer1 ... layer4`` (``nn.Sequential``
    of two :class:`BasicBlock` each), ``pool`` (global average), ``flatten``, ``fc``.
    Any input side works (the pooling is adaptive); 32x32 is the design size.
    """

    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(self, in_channels: int = 3, n_classes: int = 10, width: int = 64) -> None:
        super().__init__()
        for label, value in (("in_channels", in_channels), ("n_classes", n_classes), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"ResNet-18 {label} must be a positive integer; got {value!r}")
        self.in_channels, self.n_classes, self.width = in_channels, n_classes, width
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        channels = width
        for stage, blocks in enumerate(BLOCKS_PER_STAGE):
            out_channels = width * 2**stage
            stride = 1 if stage == 0 else 2
            layers = []
            for index in range(blocks):
                layers.append(BasicBlock(channels, out_channels, stride if index == 0 else 1))
                channels = out_channels
            self.add_module(f"layer{stage + 1}", nn.Sequential(*layers))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, n_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.flatten(self.pool(x)))
