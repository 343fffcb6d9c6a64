"""A zoo of architectures written from their published descriptions, small enough for tests.

* ResNet basic blocks (He et al. 2016): two 3x3 conv-BN layers, an identity shortcut, or a
  1x1 conv-BN projection when the shape changes; ``resnet18_cifar`` is the CIFAR variant
  (3x3 stem, no max-pool, [2, 2, 2, 2] blocks of 64-512 channels).
* Pre-activation block (He et al. 2016, "Identity mappings"): BN-ReLU-conv twice, the
  projection shortcut reads the pre-activated input.
* VGG-style stack (Simonyan & Zisserman 2015): 3x3 conv-BN-ReLU, max-pooling, dropout head.
* MobileNetV2 inverted residual (Sandler et al. 2018): 1x1 expansion, 3x3 depthwise conv,
  linear 1x1 bottleneck, residual when stride 1 and widths match.
* DenseNet-style block (Huang et al. 2017): BN-ReLU-conv layers whose outputs are
  concatenated to their inputs, then a 1x1 transition and average pooling.
* Bidirectional LSTM over sequences, reading both directions' final states; a 2-layer GRU.
* Text CNN (Kim 2014): token embedding, parallel Conv1d branches (kernel 3 and 5),
  max over time, concatenation, dropout, linear.
* MLP with BatchNorm and Dropout; the research-style LeNet (functional ``relu``, one
  ``MaxPool2d`` module used twice).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


def seeded(model: nn.Module, seed: int = 0, scale: float = 1.0) -> nn.Module:
    """Deterministic weights (and BatchNorm statistics) so that interventions have visible effects."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            fan_in = param[0].numel() if param.dim() > 1 else 16
            param.copy_(torch.randn(param.shape, generator=generator) * scale / fan_in**0.5)
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.copy_(0.1 * torch.randn(module.num_features, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(module.num_features, generator=generator))
                module.weight.add_(1.0)
    return model.eval()


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet: 3x3 stem, stages of basic blocks, global average pooling, linear head."""

    def __init__(self, widths: tuple[int, ...] = (8, 16), blocks: tuple[int, ...] = (1, 1), in_channels: int = 3,
                 n_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages, cin = [], widths[0]
        for index, (width, count) in enumerate(zip(widths, blocks)):
            layers = []
            for b in range(count):
                layers.append(BasicBlock(cin, width, 2 if index and not b else 1))
                cin = width
            stages.append(nn.Sequential(*layers))
        self.layers = nn.Sequential(*stages)
        self.linear = nn.Linear(cin, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def resnet18_cifar(n_classes: int = 10) -> ResNet:
    return ResNet((64, 128, 256, 512), (2, 2, 2, 2), 3, n_classes)


class PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


class PreActNet(nn.Module):
    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.block1 = PreActBlock(8, 8)
        self.block2 = PreActBlock(8, 12, 2)
        self.bn = nn.BatchNorm2d(12)
        self.linear = nn.Linear(12, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block2(self.block1(self.conv1(x)))
        out = F.relu(self.bn(out))
        return self.linear(out.mean((2, 3)))


class VGGish(nn.Module):
    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()

        def stage(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(*stage(3, 8), *stage(8, 8), nn.MaxPool2d(2), *stage(8, 12), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(12 * 2 * 2, 16), nn.ReLU(inplace=True),
                                        nn.Dropout(0.5), nn.Linear(16, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.residual = stride == 1 and cin == cout
        self.conv1 = nn.Conv2d(cin, hidden, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.conv3 = nn.Conv2d(hidden, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu6(self.bn1(self.conv1(x)))
        out = F.relu6(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + x if self.residual else out


class MobileNetV2ish(nn.Module):
    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.layers = nn.Sequential(InvertedResidual(8, 8, 1, 3), InvertedResidual(8, 12, 2, 2))
        self.conv2 = nn.Conv2d(12, 16, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.linear = nn.Linear(16, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu6(self.bn1(self.conv1(x))))
        out = F.relu6(self.bn2(self.conv2(out)))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(F.relu(self.bn(x)))], 1)


class DenseNetish(nn.Module):
    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.dense = nn.Sequential(DenseLayer(6, 4), DenseLayer(10, 4))
        self.bn_t = nn.BatchNorm2d(14)
        self.trans = nn.Conv2d(14, 8, 1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.linear = nn.Linear(8, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.dense(self.conv1(x))
        out = F.avg_pool2d(self.trans(F.relu(self.bn_t(out))), 2)
        out = F.relu(self.bn(out))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


class BiLSTM(nn.Module):
    """A bidirectional LSTM over ``(N, T, F)`` reading both directions' final hidden states."""

    def __init__(self, features: int = 4, hidden: int = 5, n_classes: int = 3) -> None:
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(2 * hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(x)
        return self.fc(torch.cat([h[-2], h[-1]], 1))


class StackedGRU(nn.Module):
    def __init__(self, features: int = 4, hidden: int = 6, n_classes: int = 3) -> None:
        super().__init__()
        self.gru = nn.GRU(features, hidden, num_layers=2, batch_first=True)
        self.fc = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.gru(x)[0][:, -1])


class TextCNN(nn.Module):
    """Kim (2014): embedding, parallel convolutions over time (k = 3, 5), max over time, concatenation."""

    def __init__(self, vocab: int = 30, dim: int = 6, channels: int = 4, n_classes: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.c3 = nn.Conv1d(dim, channels, 3)
        self.c5 = nn.Conv1d(dim, channels, 5)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(2 * channels, n_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens).transpose(1, 2)
        pooled = [F.relu(conv(x)).max(dim=2).values for conv in (self.c3, self.c5)]
        return self.fc(self.drop(torch.cat(pooled, 1)))


class BatchNormMLP(nn.Module):
    def __init__(self, features: int = 6, n_classes: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(features, 10), nn.BatchNorm1d(10), nn.ReLU(), nn.Dropout(0.3),
            nn.Linear(10, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3),
            nn.Linear(8, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ResearchLeNet(nn.Module):
    """The research prototype's LeNet: functional ``relu`` and one ``MaxPool2d`` module used twice."""

    def __init__(self, in_channels: int = 1, n_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = x.view(-1, 16 * 5 * 5)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def _images(n: int, size: int = 8, channels: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


def _sequences(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 5, 4, generator=torch.Generator().manual_seed(seed))


def _tokens(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 30, (n, 9), generator=torch.Generator().manual_seed(seed))


ARCHITECTURES: dict[str, tuple[Callable[[], nn.Module], Callable[[int], torch.Tensor]]] = {
    "resnet": (lambda: ResNet(), _images),
    "preact_resnet": (PreActNet, _images),
    "vgg": (VGGish, _images),
    "mobilenetv2": (MobileNetV2ish, _images),
    "densenet": (DenseNetish, _images),
    "bilstm": (BiLSTM, _sequences),
    "gru2": (StackedGRU, _sequences),
    "textcnn": (TextCNN, _tokens),
    "bn_mlp": (BatchNormMLP, lambda n, seed=0: torch.randn(n, 6, generator=torch.Generator().manual_seed(seed))),
    "research_lenet": (ResearchLeNet, lambda n, seed=0: _images(n, 32, 1, seed)),
}
"""name -> (model factory, inputs(n))."""


def build(name: str, seed: int = 0, scale: float = 2.0) -> tuple[nn.Module, Callable[[int], torch.Tensor]]:
    factory, inputs = ARCHITECTURES[name]
    return seeded(factory(), seed, scale), inputs
