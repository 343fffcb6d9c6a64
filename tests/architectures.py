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
* ShuffleNetV2 units (Ma et al. 2018): channel split, a 1x1 / depthwise 3x3 / 1x1 branch,
  concatenation and channel shuffle; the stride-2 unit with two branches.
* SqueezeNet fire modules (Iandola et al. 2016): squeeze 1x1, expand 1x1 and 3x3, concatenated;
  a 1x1 conv classifier before global pooling.
* Squeeze-and-excitation inverted residuals: MobileNetV3 (hardswish, 1x1-conv SE with
  hardsigmoid) and EfficientNet MBConv (SiLU, Linear SE with sigmoid), ``x * gate(fc(pool(x)))``.
* GoogLeNet inception module (Szegedy et al. 2015): parallel 1x1, 1x1-3x3, 1x1-5x5 and
  max-pool-1x1 branches, concatenated.
* ResNeXt / RegNet bottleneck (Xie et al. 2017): 1x1, grouped 3x3, 1x1, residual.
* ConvNeXt block (Liu et al. 2022): depthwise 7x7, permute to channels-last, LayerNorm,
  Linear-GELU-Linear, layer scale parameter, permute back, residual.
* Attention pooling over a bidirectional GRU (Yang et al. 2016): softmax weights from a Linear
  over the outputs, weighted sum.
* A text transformer (token and position embeddings, ``nn.TransformerEncoder``, mean pooling) and a
  Vision Transformer (strided-conv patch embedding, class token, added position embedding): attention
  heads and MLP neurons as units.
* An LSTM with ``proj_size`` (Sak et al. 2014), its projection read by the head; a recurrence
  written as a Python loop over ``nn.GRUCell`` / ``nn.LSTMCell`` / ``nn.RNNCell`` calls.
* Refused patterns (``REFUSED``): a transformer decoder layer (cross-attention over a memory).
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


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit (Ma et al. 2018): stride 1 splits the channels in half and transforms one half; stride 2
    transforms the whole input on two branches; the halves are concatenated and the channels shuffled."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = cout // 2
        branch_in = cin if stride > 1 else cin // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
                nn.Conv2d(cin, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
            )
        self.branch2 = nn.Sequential(
            nn.Conv2d(branch_in, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
            nn.Conv2d(half, half, 3, stride, 1, groups=half, bias=False), nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            kept, changed = x.chunk(2, dim=1)
            out = torch.cat((kept, self.branch2(changed)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2ish(nn.Module):
    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 6, 3, 1, 1, bias=False), nn.BatchNorm2d(6), nn.ReLU(inplace=True))
        self.stages = nn.Sequential(ShuffleUnit(6, 8, 2), ShuffleUnit(8, 8, 1))
        self.conv5 = nn.Sequential(nn.Conv2d(8, 12, 1, bias=False), nn.BatchNorm2d(12), nn.ReLU(inplace=True))
        self.fc = nn.Linear(12, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv5(self.stages(self.conv1(x)))
        return self.fc(out.mean((2, 3)))


class Fire(nn.Module):
    """SqueezeNet fire module (Iandola et al. 2016): squeeze 1x1, then expand 1x1 and 3x3, concatenated."""

    def __init__(self, cin: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, expand, 1)
        self.expand3x3 = nn.Conv2d(squeeze, expand, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.expand1x1(x)), F.relu(self.expand3x3(x))], 1)


class SqueezeNetish(nn.Module):
    """Conv stem, max-pooling, two fire modules, and SqueezeNet's head: dropout, a 1x1 conv to the classes, ReLU,
    global average pooling."""

    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True),
                                      nn.MaxPool2d(2, ceil_mode=True), Fire(8, 3, 4), Fire(8, 3, 5))
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(10, n_classes, 1), nn.ReLU(inplace=True),
                                        nn.AdaptiveAvgPool2d(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): ``x * gate(fc2(act(fc1(pool(x)))))``; 1x1 convs (MobileNetV3, with
    ``hardsigmoid``) or Linear layers (EfficientNet, with ``sigmoid``)."""

    def __init__(self, channels: int, reduced: int, linear: bool, gate: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.linear = linear
        layer = nn.Linear if linear else nn.Conv2d
        self.fc1 = layer(channels, reduced) if linear else nn.Conv2d(channels, reduced, 1)
        self.fc2 = layer(reduced, channels) if linear else nn.Conv2d(reduced, channels, 1)
        self.gate = gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.linear:
            scale = self.gate(self.fc2(F.silu(self.fc1(x.mean((2, 3))))))[:, :, None, None]
        else:
            scale = self.gate(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        return x * scale


class SEInvertedResidual(nn.Module):
    """MobileNetV3 bneck / EfficientNet MBConv: 1x1 expansion, depthwise conv, squeeze-and-excitation, linear 1x1
    projection, residual when the shapes match."""

    def __init__(self, cin: int, hidden: int, cout: int, stride: int, efficientnet: bool) -> None:
        super().__init__()
        self.act: Callable[[torch.Tensor], torch.Tensor] = F.silu if efficientnet else F.hardswish
        self.residual = stride == 1 and cin == cout
        self.expand = nn.Conv2d(cin, hidden, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.depthwise = nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        gate = torch.sigmoid if efficientnet else F.hardsigmoid
        self.se = SqueezeExcite(hidden, max(2, hidden // 4), efficientnet, gate)
        self.project = nn.Conv2d(hidden, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.expand(x)))
        out = self.act(self.bn2(self.depthwise(out)))
        out = self.bn3(self.project(self.se(out)))
        return out + x if self.residual else out


class SENetish(nn.Module):
    """A MobileNetV3 block (hardswish, 1x1-conv SE with hardsigmoid) and an EfficientNet block (SiLU, Linear SE with
    sigmoid)."""

    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, 2, 1, bias=False), nn.BatchNorm2d(6), nn.Hardswish())
        self.blocks = nn.Sequential(SEInvertedResidual(6, 12, 6, 1, False), SEInvertedResidual(6, 12, 8, 2, True))
        self.fc = nn.Linear(8, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1).flatten(1))


class Inception(nn.Module):
    """GoogLeNet inception module (Szegedy et al. 2015): 1x1, 1x1-3x3, 1x1-5x5 and 3x3 max-pool-1x1 branches,
    concatenated."""

    def __init__(self, cin: int, c1: int, c3: tuple[int, int], c5: tuple[int, int], pool: int) -> None:
        super().__init__()
        self.branch1 = nn.Conv2d(cin, c1, 1)
        self.branch3 = nn.Sequential(nn.Conv2d(cin, c3[0], 1), nn.ReLU(inplace=True), nn.Conv2d(c3[0], c3[1], 3, padding=1))
        self.branch5 = nn.Sequential(nn.Conv2d(cin, c5[0], 1), nn.ReLU(inplace=True), nn.Conv2d(c5[0], c5[1], 5, padding=2))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(cin, pool, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.branch1, self.branch3, self.branch5, self.branch_pool)
        return F.relu(torch.cat([branch(x) for branch in branches], 1))


class GoogLeNetish(nn.Module):
    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.inception = Inception(6, 3, (3, 4), (2, 3), 2)
        self.fc = nn.Linear(12, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inception(F.max_pool2d(F.relu(self.stem(x)), 2))
        return self.fc(F.dropout(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1), 0.4, self.training))


class ResNeXtBlock(nn.Module):
    """ResNeXt / RegNet bottleneck (Xie et al. 2017, Radosavovic et al. 2020): 1x1, grouped 3x3, 1x1, residual."""

    def __init__(self, cin: int, width: int, cout: int, groups: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNeXtish(nn.Module):
    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(ResNeXtBlock(8, 8, 8, 4, 1), ResNeXtBlock(8, 8, 12, 2, 2))
        self.fc = nn.Linear(12, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1).flatten(1))


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block (Liu et al. 2022): depthwise 7x7, channels-last LayerNorm, Linear MLP with GELU, layer scale,
    residual."""

    def __init__(self, dim: int, layer_scale: float = 0.5) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.dwconv(x).permute(0, 2, 3, 1)
        out = self.pwconv2(F.gelu(self.pwconv1(self.norm(out))))
        return x + (self.gamma * out).permute(0, 3, 1, 2)


class ConvNeXtish(nn.Module):
    """Patchify stem (conv 2x2 stride 2) with a channels-first LayerNorm, two ConvNeXt blocks, pooled LayerNorm
    head."""

    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 2, 2)
        self.stem_norm = nn.LayerNorm(6, eps=1e-6)
        self.blocks = nn.Sequential(ConvNeXtBlock(6), ConvNeXtBlock(6))
        self.norm = nn.LayerNorm(6, eps=1e-6)
        self.head = nn.Linear(6, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stem_norm(self.stem(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        out = self.blocks(out)
        return self.head(self.norm(out.mean((2, 3))))


class ProjectedLSTM(nn.Module):
    """An LSTM with ``proj_size`` (Sak et al. 2014): ``h_t = W_hr (o_t * tanh(c_t))`` feeds the recurrence and the
    head."""

    def __init__(self, features: int = 4, hidden: int = 5, proj: int = 3, n_classes: int = 3) -> None:
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, batch_first=True, proj_size=proj)
        self.fc = nn.Linear(proj, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.lstm(x)[0][:, -1])


class CellLoop(nn.Module):
    """A recurrence written as a Python loop over steps: an ``nn.GRUCell`` (or ``LSTMCell``/``RNNCell``) called once
    per step, as in hand-written seq2seq encoders; the head reads the final state."""

    def __init__(self, cell: type[nn.RNNCellBase] = nn.GRUCell, features: int = 4, hidden: int = 5,
                 n_classes: int = 3) -> None:
        super().__init__()
        self.cell = cell(features, hidden)
        self.fc = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.new_zeros(x.shape[0], self.cell.hidden_size)
        c = h
        for t in range(x.shape[1]):
            if isinstance(self.cell, nn.LSTMCell):
                h, c = self.cell(x[:, t], (h, c))
            else:
                h = self.cell(x[:, t], h)
        return self.fc(h)


class DecoderHead(nn.Module):
    """A transformer decoder layer reading the sequence as its own memory, and a linear head on the last position."""

    def __init__(self, features: int = 4, n_classes: int = 3) -> None:
        super().__init__()
        self.decoder = nn.TransformerDecoderLayer(features, 2, dim_feedforward=8, dropout=0.0, batch_first=True)
        self.fc = nn.Linear(features, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.decoder(x, x)[:, -1])


class AttentionBiGRU(nn.Module):
    """Attention pooling over a bidirectional GRU (Yang et al. 2016): softmax weights from a Linear over the steps'
    outputs, then the weighted sum of the outputs."""

    def __init__(self, features: int = 4, hidden: int = 4, n_classes: int = 3) -> None:
        super().__init__()
        self.gru = nn.GRU(features, hidden, batch_first=True, bidirectional=True)
        self.score = nn.Linear(2 * hidden, 1)
        self.fc = nn.Linear(2 * hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.gru(x)[0]
        weights = torch.softmax(self.score(out).squeeze(-1), dim=1)
        return self.fc((weights.unsqueeze(-1) * out).sum(1))


class TextTransformerish(nn.Module):
    """A transformer encoder over token ids (Vaswani et al. 2017): token and position embeddings, two post-norm
    ``nn.TransformerEncoderLayer`` blocks (2 heads), mean pooling, linear; units are heads and MLP neurons."""

    def __init__(self, vocab: int = 30, width: int = 8, n_classes: int = 3) -> None:
        super().__init__()
        self.embedding, self.position = nn.Embedding(vocab, width), nn.Embedding(16, width)
        layer = nn.TransformerEncoderLayer(width, 2, 2 * width, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.fc = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1)
        return self.fc(self.encoder(self.embedding(x) + self.position(positions)).mean(1))


class ViTish(nn.Module):
    """Vision Transformer (Dosovitskiy et al. 2021): patch embedding by a strided conv, class token, added position
    embedding, one pre-norm GELU encoder block, LayerNorm, the class token's output to a linear head."""

    def __init__(self, width: int = 8, n_classes: int = 3) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, width, 4, 4)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embedding = nn.Parameter(torch.zeros(1, 5, width))
        layer = nn.TransformerEncoderLayer(width, 2, 2 * width, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.norm, self.head = nn.LayerNorm(width), nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], 1) + self.pos_embedding
        return self.head(self.norm(self.encoder(tokens))[:, 0])


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
    "shufflenetv2": (ShuffleNetV2ish, _images),
    "squeezenet": (SqueezeNetish, _images),
    "se_mbconv": (SENetish, _images),
    "inception": (GoogLeNetish, _images),
    "resnext": (ResNeXtish, _images),
    "convnext": (ConvNeXtish, _images),
    "attention_bigru": (AttentionBiGRU, _sequences),
    "lstm_proj": (ProjectedLSTM, _sequences),
    "grucell_loop": (CellLoop, _sequences),
    "lstmcell_loop": (lambda: CellLoop(nn.LSTMCell), _sequences),
    "rnncell_loop": (lambda: CellLoop(nn.RNNCell), _sequences),
    "transformer_decoder": (DecoderHead, _sequences),
    "text_transformer": (TextTransformerish, _tokens),
    "vit": (ViTish, _images),
}
"""name -> (model factory, inputs(n))."""

REFUSED: dict[str, tuple[str, str]] = {
    "transformer_decoder": (
        r"module 'decoder': TransformerDecoderLayer is not supported",
        "its cross-attention reads a memory input that has no traced parent",
    ),
}
"""Patterns the engine refuses before any work: name -> (the refusal's pattern, why it is refused).
``tests/interventions/test_patterns.py`` asserts the refusal at every entry point."""


def build(name: str, seed: int = 0, scale: float = 2.0) -> tuple[nn.Module, Callable[[int], torch.Tensor]]:
    factory, inputs = ARCHITECTURES[name]
    return seeded(factory(), seed, scale), inputs
