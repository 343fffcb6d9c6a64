"""Step 2, model: build the ``model`` section's architecture, then train it or load its checkpoint."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from explainnn.config import ModelConfig, dump_config
from explainnn.files import write_json, write_text
from explainnn.models import build_model
from explainnn.pipeline.context import RunContext
from explainnn.training import train_or_load


def train_or_load_model(ctx: RunContext, options: ModelConfig, *, seed: int | None = None) -> nn.Module:
    """The model of ``options`` trained with the ``training`` section, or loaded from its checkpoint.

    ``training.train`` decides (``auto``: load when the checkpoint exists).
    Writes ``config.yaml`` (the resolved config) and ``training.json`` into the
    run folder and sets ``ctx.model``/``ctx.training``. Another ``seed`` (as
    the clustering step's seed agreement asks for) trains a separate model with
    its own checkpoint and leaves the context alone.

    Training never overwrites another model's checkpoint: when ``model.checkpoint``
    holds one, the model goes to its own path in the run folder (``model.pt``), the
    run says so, and the resolved config names that file.
    """
    config = ctx.config
    own = seed is None or seed == config.seed
    seed = config.seed if seed is None else seed

    def seeded(path: Path) -> Path:
        return path if own else path.with_name(f"{path.stem}_seed{seed}{path.suffix}")

    checkpoint = seeded(ctx.checkpoint)
    fallback = seeded(ctx.run_dir / "model.pt") if config.model.checkpoint else None
    model = build_model(options.name, ctx.dataset.info, **options.params)
    train_kwargs = {**config.training.model_dump(exclude={"train"}), "seed": seed, "progress": ctx.progress}
    model, outcome = train_or_load(
        model,
        ctx.dataset,
        checkpoint=checkpoint,
        mode=config.training.train,
        metadata={"config_hash": config.training_hash() if own else f"seed {seed}"},
        train_kwargs=train_kwargs,
        device=ctx.device,
        fallback=fallback,
    )
    if "kept" in outcome:
        ctx.echo(f"note        {outcome['kept']['path']} holds {outcome['kept']['holds']} and is left as it is; "
              f"this model was written to {outcome['checkpoint']}")
    if not own:
        return model
    if "kept" in outcome:  # the resolved config names the file the model is in
        config = config.model_copy(update={"model": config.model.model_copy(update={"checkpoint": outcome["checkpoint"]})})
        ctx.config = config
    record = outcome["metadata"]
    ctx.echo(f"model       {options.name}: {outcome['action']} {outcome['checkpoint']} "
          f"(train accuracy {record['train_accuracy']:.4f}, test accuracy {record['test_accuracy']:.4f})")
    if not outcome["config_hash_matches"]:
        ctx.echo("warning     the checkpoint was trained with other data/model/training settings than this config; "
              "set training.train: always to retrain")
    write_text(ctx.run_dir / "config.yaml", dump_config(config))
    write_json(ctx.run_dir / "training.json", record)
    ctx.model, ctx.training = model, record
    return model
