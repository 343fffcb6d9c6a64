"""Step 1, data: load the dataset named by the ``data`` section."""

from __future__ import annotations

from explainnn.config import DataConfig
from explainnn.data import Dataset, load_dataset, supports_image_size
from explainnn.errors import ConfigError
from explainnn.pipeline.context import RunContext


def load_data(ctx: RunContext, options: DataConfig) -> Dataset:
    """Load ``options.name`` (padding images to ``image_size`` where that applies) into ``ctx.dataset``.

    Also checks ``discovery.target_class`` against the dataset's classes, so a
    wrong class stops the run before any training.
    """
    dataset = load_dataset(
        options.name,
        options.root,
        download=options.download,
        image_size=options.image_size if supports_image_size(options.name) else None,
        seed=ctx.seed,
        **options.options,
    )
    info = dataset.info
    target = ctx.config.discovery.target_class
    if target != "all" and target >= info.n_classes:
        raise ConfigError(f"discovery.target_class: {target} is out of range; "
                          f"{info.name} has classes 0-{info.n_classes - 1} or 'all'")
    ctx.echo(f"data        {info.name}: {len(dataset.y_train)} train / {len(dataset.y_test)} test, {info.source}")
    ctx.dataset = dataset
    return dataset
