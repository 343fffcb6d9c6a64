"""Command-line entry point: read the config, then wire the pipeline's steps.

    python src/explainnn/main.py [--config config.yaml] [section.key=value ...]

Each step lives in its own module; this file only decides, from the config,
which steps run and where their results go. A :class:`~explainnn.errors.UserError`
anywhere becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and __package__ in (None, ""):
    # Run as a script: the package folder itself must not shadow top-level modules.
    _here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != _here]

import argparse
import time

from explainnn.errors import UserError

EXIT_USER_ERROR = 2


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="explainnn",
        description="Learn which hidden units cause a class prediction, explain inputs with them, "
        "and compare the explanations with the standard methods.",
        epilog="Example: python src/explainnn/main.py discovery.target_class=7 discovery.on=nodes",
    )
    parser.add_argument(
        "--config",
        default=None,
        help="YAML config file (default: ./config.yaml when present, else the built-in defaults)",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="section.key=value",
        help="override any config key, e.g. discovery.target_class=7 training.epochs=3",
    )
    return parser.parse_args(argv)


def _config_path(given: str | None) -> Path | None:
    if given is not None:
        return Path(given)
    default = Path("config.yaml")
    return default if default.is_file() else None


def load_data(config):
    """The dataset named by ``config.data`` (image padding only where it applies)."""
    from explainnn.data import load_dataset, supports_image_size

    return load_dataset(
        config.data.name,
        config.data.root,
        download=config.data.download,
        image_size=config.data.image_size if supports_image_size(config.data.name) else None,
        seed=config.seed,
        **config.data.options,
    )


def train(config, dataset, device, *, seed: int | None = None):
    """Build ``config.model`` and train it or load its checkpoint (another ``seed``: its own checkpoint)."""
    from explainnn.models import build_model
    from explainnn.training import train_or_load

    seed = config.seed if seed is None else seed
    checkpoint = config.checkpoint_path()
    if seed != config.seed:
        checkpoint = checkpoint.with_name(f"{checkpoint.stem}_seed{seed}{checkpoint.suffix}")
    model = build_model(config.model.name, dataset.info, **config.model.params)
    train_kwargs = config.training.model_dump(exclude={"train"})
    train_kwargs.update(seed=seed, progress=config.progress)
    return train_or_load(
        model,
        dataset,
        checkpoint=checkpoint,
        mode=config.training.train,
        metadata={"config_hash": config.training_hash() if seed == config.seed else f"seed {seed}"},
        train_kwargs=train_kwargs,
        device=device,
    )


def run(config) -> dict:
    """Run every enabled step of ``config``; return a summary of what was produced."""
    from explainnn.config import dump_config
    from explainnn.errors import ConfigError
    from explainnn.files import write_json, write_text
    from explainnn.runtime import resolve_device, seed_everything

    seed_everything(config.seed)
    device = resolve_device(config.device)
    run_dir = config.run_dir()
    plots = {"plots": config.plots.enabled, "dpi": config.plots.dpi, "progress": config.progress}
    summary: dict = {"run_dir": str(run_dir), "device": str(device)}

    dataset = load_data(config)
    info = dataset.info
    target = config.discovery.target_class
    if target != "all" and target >= info.n_classes:
        raise ConfigError(
            f"discovery.target_class: {target} is out of range; {info.name} has classes 0-{info.n_classes - 1} or 'all'"
        )
    print(f"data        {info.name}: {len(dataset.y_train)} train / {len(dataset.y_test)} test, {info.source}")

    model, train_info = train(config, dataset, device)
    record = train_info["metadata"]
    print(
        f"model       {config.model.name}: {train_info['action']} {train_info['checkpoint']} "
        f"(train accuracy {record['train_accuracy']:.4f}, test accuracy {record['test_accuracy']:.4f})"
    )
    if not train_info["config_hash_matches"]:
        print(
            "warning     the checkpoint was trained with other data/model/training settings than this config; "
            "set training.train: always to retrain"
        )
    write_text(run_dir / "config.yaml", dump_config(config))
    write_json(run_dir / "training.json", record)
    summary["training"] = record

    graphs: dict = {}
    if config.discovery.enabled:
        from explainnn.steps import discovery_step

        options = config.discovery
        targets = list(range(info.n_classes)) if options.target_class == "all" else [options.target_class]
        graphs = discovery_step(
            model,
            dataset,
            targets,
            run_dir / "discovery",
            discovery=options.model_dump(include={"layers", "on", "intervention", "beta", "delta", "n_samples",
                                                  "test", "alpha", "min_effect"}),
            check_circuit=options.check_circuit,
            stability_options=options.stability.model_dump() if options.stability.enabled else None,
            seed=config.seed,
            model_name=config.model.name,
            **plots,
        )
    summary["graphs"] = graphs
    explained = sorted(graphs) or ([] if target == "all" else [target])

    if config.attribution.enabled:
        from explainnn.steps import attribution_step

        for k in explained:
            attribution_step(
                model,
                dataset,
                k,
                graphs.get(k),
                run_dir / "attributions" / f"class_{k}",
                methods=config.attribution.methods,
                n_samples=config.attribution.n_samples,
                causal_paths_layer=config.attribution.causal_paths_layer,
                options=config.attribution.options,
                seed=config.seed,
                **plots,
            )

    if config.evaluation.enabled:
        from explainnn.evaluation import evaluation_step

        evaluation = config.evaluation
        for k in explained:
            evaluation_step(
                model,
                dataset,
                k,
                graphs.get(k),
                run_dir / "evaluation" / (f"class_{k}" if len(explained) > 1 else ""),
                methods=evaluation.methods or config.attribution.methods,
                metrics=evaluation.metrics,
                n_samples=evaluation.n_samples,
                options=evaluation.options,
                method_options=config.attribution.options,
                seed=config.seed,
                **plots,
            )

    analyses = config.analyses
    if analyses.views.enabled:
        from explainnn.analyses.views import views_step

        views = analyses.views
        views_step(model, dataset, run_dir / "views", graph=graphs.get(explained[0]) if explained else None,
                   filters=views.filters, activation_maps=views.activation_maps, maximize=views.maximize,
                   layer=views.layer, projection=views.projection, n_samples=views.n_samples, seed=config.seed,
                   **plots)
    if analyses.text.enabled and info.modality == "tokens":
        from explainnn.analyses.text_importance import text_step

        text_step(model, dataset, run_dir / "text", methods=analyses.text.methods, n_samples=analyses.text.n_samples,
                  top_k=analyses.text.top_k, seed=config.seed, **plots)
    if analyses.clustering.enabled:
        from explainnn.analyses.clustering import clustering_step

        clustering_step(
            model,
            dataset,
            run_dir / "clustering",
            method=analyses.clustering.method,
            n_samples=analyses.clustering.n_samples,
            max_clusters=analyses.clustering.max_clusters,
            seeds=analyses.clustering.seeds,
            retrain=lambda seed: train(config, dataset, device, seed=seed)[0],
            seed=config.seed,
            **plots,
        )
    if config.report:
        from explainnn.reports import write_report

        written = write_report(run_dir, config_yaml=dump_config(config), training=record, graphs=graphs)
        print(f"report      {written['html']} and {written['markdown'].name}")
    return summary


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, and map user mistakes to one line and exit code 2."""
    args = _parse_args(argv)
    started = time.perf_counter()
    try:
        from explainnn.config import load_config

        config = load_config(_config_path(args.config), args.overrides)
        summary = run(config)
    except UserError as exc:
        print(f"explainnn: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("explainnn: interrupted", file=sys.stderr)
        return 130
    print(f"done in {time.perf_counter() - started:.1f} s; results in {summary['run_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
