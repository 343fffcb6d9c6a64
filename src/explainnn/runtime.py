"""Deprecated alias of :mod:`explainnn.torch_utils` (the seeding and device helpers); removed in 0.3."""

from explainnn.torch_utils import DEVICE_CHOICES, resolve_device, seed_everything

__all__ = ["DEVICE_CHOICES", "resolve_device", "seed_everything"]
