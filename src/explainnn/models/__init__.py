"""Model registry: build a classifier that fits a dataset from a name and parameters.

A builder is a function ``(info: DatasetInfo, **params) -> nn.Module``; its keyword
parameters (with defaults) are the model's configurable parameters, and everything
that follows from the dataset (channels, input size, classes, vocabulary) is read
from ``info``. Every built model carries ``model.explainnn_spec = {"name", "params"}``
(params with defaults filled in) so a checkpoint can record what it holds.
"""

from __future__ import annotations

import inspect
from typing import Callable

from torch import nn

from explainnn.data.base import DatasetInfo
from explainnn.errors import ConfigError
from explainnn.models.lenet import LeNet
from explainnn.models.recurrent import CELLS, POOLINGS, RecurrentClassifier, images_as_rows
from explainnn.models.resnet import BasicBlock, ResNet18
from explainnn.models.transformer import TEXT_POOLINGS, TextTransformer, VisionTransformer

ModelBuilder = Callable[..., nn.Module]

MODELS: dict[str, ModelBuilder] = {}

_SCALARS = (str, int, float, bool, type(None))


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator that adds a builder ``(info, **params) -> nn.Module`` under ``name``."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"a model name must be a non-empty string; got {name!r}")

    def decorate(builder: ModelBuilder) -> ModelBuilder:
        if name in MODELS:
            raise ConfigError(f"model '{name}' is already registered; choose another name")
        MODELS[name] = builder
        return builder

    return decorate


def _jsonable(value: object) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_jsonable(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _jsonable(v) for k, v in value.items())
    return isinstance(value, _SCALARS)


_NAMED_PARAMETERS = {inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY}


def model_parameters(name: str) -> dict[str, object]:
    """The configurable parameters of a registered model and their defaults."""
    signature = inspect.signature(_builder(name))
    return {
        p.name: (None if p.default is inspect.Parameter.empty else p.default)
        for p in list(signature.parameters.values())[1:]
        if p.kind in _NAMED_PARAMETERS
    }


def _builder(name: str) -> ModelBuilder:
    if name not in MODELS:
        raise ConfigError(f"unknown model '{name}'; valid models: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def build_model(name: str, info: DatasetInfo, **params: object) -> nn.Module:
    """Build model ``name`` for the dataset described by ``info``."""
    builder = _builder(name)
    signature = inspect.signature(builder)
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    valid = model_parameters(name)
    if not accepts_any:
        for key in params:
            if key not in valid:
                choices = ", ".join(valid) if valid else "none (everything follows from the dataset)"
                raise ConfigError(
                    f"unknown parameter '{key}' for model '{name}'; valid parameters: {choices}"
                )
    for key, value in params.items():
        if not _jsonable(value):
            raise ConfigError(
                f"parameter '{key}' of model '{name}' must be a number, string, bool or list; "
                f"got {type(value).__name__}"
            )
    try:
        bound = signature.bind(info, **params)
    except TypeError as exc:
        raise ConfigError(f"model '{name}': {exc}") from None
    bound.apply_defaults()
    model = builder(info, **params)
    resolved: dict[str, object] = {}
    for key, value in list(bound.arguments.items())[1:]:
        if signature.parameters[key].kind is inspect.Parameter.VAR_KEYWORD:
            resolved.update(value)
        else:
            resolved[key] = value
    spec = {"name": name, "params": {k: list(v) if isinstance(v, tuple) else v for k, v in resolved.items()}}
    model.explainnn_spec = spec  # type: ignore[assignment]  # nn.Module types its attributes as tensors or modules
    return model


@register_model("lenet")
def _build_lenet(info: DatasetInfo) -> nn.Module:
    if info.modality != "image" or len(info.input_shape) != 3:
        raise ConfigError(
            f"model 'lenet' needs image data (C, H, W), but dataset '{info.name}' holds "
            f"{info.modality} of shape {tuple(info.input_shape)}; use lstm, gru or rnn"
        )
    channels, height, width = info.input_shape
    return LeNet(channels, (height, width), info.n_classes)


@register_model("resnet18")
def _build_resnet18(info: DatasetInfo, width: int = 64) -> nn.Module:
    """ResNet-18, CIFAR variant (3x3 stem, no max-pool); ``width`` channels in the first stage."""
    if info.modality != "image" or len(info.input_shape) != 3:
        raise ConfigError(
            f"model 'resnet18' needs image data (C, H, W), but dataset '{info.name}' holds "
            f"{info.modality} of shape {tuple(info.input_shape)}; use lstm, gru or rnn"
        )
    return ResNet18(info.input_shape[0], info.n_classes, width)


def _recurrent_builder(cell: str) -> ModelBuilder:
    def build(
        info: DatasetInfo,
        hidden_size: int = 128,
        num_layers: int = 1,
        pooling: str = "last",
        embedding_dim: int | None = None,
        dropout: float = 0.0,
    ) -> nn.Module:
        vocab_size = pad_index = input_size = None
        if info.modality == "tokens":
            if info.vocab is None or info.pad_index is None:
                raise ConfigError(
                    f"token dataset '{info.name}' has no vocabulary or pad index; "
                    "its loader must set info.vocab and info.pad_index"
                )
            vocab_size, pad_index = len(info.vocab), info.pad_index
            embedding_dim = 64 if embedding_dim is None else embedding_dim
        else:
            if embedding_dim is not None:
                raise ConfigError(
                    f"embedding_dim only applies to token datasets; dataset '{info.name}' "
                    f"holds {info.modality}"
                )
            if info.modality == "image" and len(info.input_shape) == 3:
                input_size = info.input_shape[0] * info.input_shape[2]
            elif info.modality == "sequence" and len(info.input_shape) == 2:
                input_size = info.input_shape[1]
            else:
                raise ConfigError(
                    f"model '{cell}' cannot read dataset '{info.name}' ({info.modality} of "
                    f"shape {tuple(info.input_shape)}); it reads (C, H, W) images, (T, F) "
                    "sequences or (L,) tokens"
                )
        return RecurrentClassifier(
            cell,
            input_size,
            info.n_classes,
            hidden_size=hidden_size,
            num_layers=num_layers,
            pooling=pooling,
            vocab_size=vocab_size,
            embedding_dim=64 if embedding_dim is None else embedding_dim,
            pad_index=0 if pad_index is None else pad_index,
            dropout=dropout,
        )

    build.__name__ = f"_build_{cell}"
    build.__doc__ = f"{cell.upper()} classifier; pooling one of {', '.join(POOLINGS)}."
    return build


for _cell in CELLS:
    register_model(_cell)(_recurrent_builder(_cell))


@register_model("transformer")
def _build_transformer(
    info: DatasetInfo,
    d_model: int = 64,
    num_heads: int = 4,
    num_layers: int = 2,
    dim_feedforward: int = 128,
    dropout: float = 0.1,
    pooling: str = "mean",
) -> nn.Module:
    """Transformer encoder on token ids (``TextTransformer``); pooling one of mean, cls."""
    if info.modality != "tokens" or len(info.input_shape) != 1:
        raise ConfigError(
            f"model 'transformer' reads token ids (L,), but dataset '{info.name}' holds "
            f"{info.modality} of shape {tuple(info.input_shape)}; use vit for images"
        )
    if info.vocab is None or info.pad_index is None:
        raise ConfigError(
            f"token dataset '{info.name}' has no vocabulary or pad index; "
            "its loader must set info.vocab and info.pad_index"
        )
    return TextTransformer(
        len(info.vocab), info.n_classes, info.input_shape[0], d_model=d_model, num_heads=num_heads,
        num_layers=num_layers, dim_feedforward=dim_feedforward, dropout=dropout, pooling=pooling,
        pad_index=info.pad_index,
    )


@register_model("vit")
def _build_vit(
    info: DatasetInfo,
    patch_size: int = 4,
    d_model: int = 64,
    num_heads: int = 4,
    num_layers: int = 4,
    dim_feedforward: int = 128,
    dropout: float = 0.1,
) -> nn.Module:
    """Vision Transformer (``VisionTransformer``): patch_size must divide the image's height and width."""
    if info.modality != "image" or len(info.input_shape) != 3:
        raise ConfigError(
            f"model 'vit' needs image data (C, H, W), but dataset '{info.name}' holds "
            f"{info.modality} of shape {tuple(info.input_shape)}; use transformer for token ids"
        )
    channels, height, width = info.input_shape
    return VisionTransformer(
        channels, (height, width), info.n_classes, patch_size=patch_size, d_model=d_model,
        num_heads=num_heads, num_layers=num_layers, dim_feedforward=dim_feedforward, dropout=dropout,
    )

__all__ = [
    "MODELS",
    "BasicBlock",
    "LeNet",
    "RecurrentClassifier",
    "ResNet18",
    "TEXT_POOLINGS",
    "TextTransformer",
    "VisionTransformer",
    "build_model",
    "images_as_rows",
    "model_parameters",
    "register_model",
]
