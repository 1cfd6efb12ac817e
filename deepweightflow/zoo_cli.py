"""`dwf zoo ...`: train, import, canonicalize and report model zoos (see models.zoo)."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

zoo_app = typer.Typer(help="Build, canonicalize and inspect model zoos.", no_args_is_help=True)
console = Console()


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user can fix (bad names, missing data, broken zoos) into a message and exit 1."""
    from models.zoo.datasets import DatasetNotFoundError

    try:
        yield
    except (ValueError, DatasetNotFoundError) as err:  # ZooError and UnknownArchitectureError included
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(1) from None


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


@zoo_app.command("train")
def train(
    architecture: Annotated[str, typer.Argument(help="Registered architecture, e.g. mlp-fashion.")],
    out: Annotated[Path, typer.Option(help="Zoo directory; rerun with the same settings to resume.")],
    members: Annotated[int, typer.Option(help="Members; seeds are first_seed, first_seed+1, ...")] = 100,
    epochs: Annotated[int | None, typer.Option(help="Epochs (default: the architecture's recipe).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Examples per member per step.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    weight_decay: Annotated[float | None, typer.Option(help="Weight decay.")] = None,
    optimizer: Annotated[str | None, typer.Option(help="adamw or sgd.")] = None,
    schedule: Annotated[str | None, typer.Option(help="cosine or constant.")] = None,
    train_subset: Annotated[
        int | None, typer.Option(help="Train on this many training examples; 0 = all.")
    ] = None,
    chunk_size: Annotated[
        int | None, typer.Option(help="Members trained at once; the resume unit [default: 25, cnn 5].")
    ] = None,
    first_seed: Annotated[int, typer.Option(help="Seed of the first member.")] = 0,
    data_dir: Annotated[Path | None, typer.Option(help="Folder holding the dataset files.")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (default: torch's choice).")] = None,
) -> None:
    """Train a zoo: MEMBERS networks of ARCHITECTURE, batched, written chunk by chunk to OUT."""
    with user_errors():
        from dataclasses import replace

        import torch

        from models.architectures import get_architecture
        from models.zoo.build import train_zoo
        from models.zoo.train import default_recipe

        if threads is not None:
            torch.set_num_threads(threads)
        overrides: dict[str, Any] = {
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "weight_decay": weight_decay,
            "optimizer": optimizer,
            "schedule": schedule,
        }
        get_architecture(architecture)  # fail fast on an unknown name
        given = {k: v for k, v in overrides.items() if v is not None}
        recipe = replace(default_recipe(architecture), **given)
        if train_subset is not None:
            recipe = replace(recipe, train_subset=train_subset or None)
        console.print(f"training {members} {architecture} members -> {out}  recipe: {recipe.to_dict()}")
        with progress_bar() as progress:
            task = progress.add_task("steps", total=None)

            def on_step(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            def on_chunk(chunk: Any) -> None:
                progress.console.print(
                    f"chunk {chunk.file}: members {chunk.first}-{chunk.first + chunk.count - 1} "
                    f"in {chunk.wall_time_s:.1f} s"
                )

            manifest = train_zoo(
                architecture,
                members,
                recipe,
                out,
                first_seed=first_seed,
                chunk_size=chunk_size,
                data_dir=str(data_dir) if data_dir else None,
                on_step=on_step,
                on_chunk=on_chunk,
            )
        print_accuracy_table(manifest)


def per_feature(option: str, text: str) -> float | list[float]:
    """A number, or a file of per-feature numbers (a JSON list, or numbers separated by spaces,
    commas or newlines)."""
    import json

    try:
        return float(text)
    except ValueError:
        pass
    path = Path(text)
    if not path.is_file():
        raise typer.BadParameter(
            f"{option} takes a number or a file of per-feature numbers; {text!r} is neither"
        )
    content = path.read_text()
    try:
        values = (
            json.loads(content) if content.lstrip().startswith("[") else content.replace(",", " ").split()
        )
        return [float(v) for v in values]
    except (ValueError, TypeError):
        raise typer.BadParameter(f"{path} must hold numbers (a JSON list, or one per line)") from None


def key_map_rules(text: str | None) -> dict[str, str]:
    """`--key-map`: old=new pairs, or a JSON file holding an {old: new} object."""
    import json

    from models.zoo.key_map import parse_rules

    if not text:
        return {}
    path = Path(text)
    if not path.is_file():
        return parse_rules(text)
    rules = json.loads(path.read_text())
    if not isinstance(rules, dict) or not all(isinstance(v, str) for v in rules.values()):
        raise typer.BadParameter(f"{path} must hold a JSON object of old key -> new key")
    return rules


@zoo_app.command("import")
def import_(
    architecture: Annotated[
        str, typer.Argument(help="Registered architecture the members are, e.g. mlp-fashion.")
    ],
    source: Annotated[
        Path, typer.Argument(help="Folder of per-member checkpoints, or one stacked .safetensors file.")
    ],
    out: Annotated[Path, typer.Option(help="Zoo directory to write (must not exist or be empty).")],
    input_scale: Annotated[
        float | None, typer.Option(help="Members take (x / scale - mean) / std of raw inputs x.")
    ] = None,
    input_mean: Annotated[
        str | None, typer.Option(help="Mean: a number, or a file of one number per input feature.")
    ] = None,
    input_std: Annotated[
        str | None, typer.Option(help="Std: a number, or a file of per-feature numbers.")
    ] = None,
    trained_on: Annotated[
        str | None, typer.Option(help="Which data the members were trained on, in words.")
    ] = None,
    saw_validation: Annotated[
        bool,
        typer.Option(
            "--saw-validation", help="The members were trained on the dataset's validation split too."
        ),
    ] = False,
    key_map: Annotated[
        str | None,
        typer.Option(help="old=new,... (whole keys or module prefixes; old= drops), or a JSON file."),
    ] = None,
    allow_pickle: Annotated[
        bool, typer.Option("--allow-pickle", help="Let torch files run pickled code (trusted files only).")
    ] = False,
    chunk_size: Annotated[int | None, typer.Option(help="Members per zoo chunk.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Folder holding the dataset files.")] = None,
) -> None:
    """Import networks trained elsewhere as a zoo of ARCHITECTURE: keys mapped, members evaluated."""
    with user_errors():
        from contract.inputs import Standardize
        from models.zoo.importing import NOT_STATED, import_zoo

        declared = (input_scale, input_mean, input_std) != (None, None, None)
        preprocessing = (
            Standardize(
                scale=1.0 if input_scale is None else input_scale,
                mean=0.0 if input_mean is None else per_feature("--input-mean", input_mean),
                std=1.0 if input_std is None else per_feature("--input-std", input_std),
            )
            if declared
            else None
        )
        with console.status(f"importing {source} as {architecture} members"):
            manifest = import_zoo(
                architecture,
                source,
                out,
                preprocessing=preprocessing,
                trained_on=trained_on or NOT_STATED,
                saw_validation=saw_validation,
                rules=key_map_rules(key_map),
                allow_pickle=allow_pickle,
                chunk_size=chunk_size,
                data_dir=str(data_dir) if data_dir else None,
            )
        contract = manifest.declared_input()
        renamed = manifest.imported["key_map"]
        console.print(f"imported {manifest.size} members -> {out}")
        if renamed:
            console.print("keys: " + ", ".join(f"{k} -> {v}" for k, v in renamed.items()))
        console.print(f"input: {contract.usage()}")
        if not declared:
            console.print(
                "(no --input-scale/--input-mean/--input-std given: the dataset's own preprocessing)"
            )
        print_accuracy_table(manifest)
        test_acc = sum(m["test_acc"] for m in manifest.members) / manifest.size
        if test_acc < 1.5 / len(contract.classes):
            console.print(
                f"[yellow]the members score {100 * test_acc:.1f}% on the test split, near chance: check the "
                "declared input preprocessing (--input-scale/--input-mean/--input-std) and the key map"
            )
        if saw_validation:
            console.print("[yellow]the members saw the validation split: validation figures are not held out")


@zoo_app.command("merge")
def merge(
    sources: Annotated[list[Path], typer.Argument(help="Complete zoos of one architecture and recipe.")],
    out: Annotated[Path, typer.Option(help="Zoo directory to write (must not exist or be empty).")],
) -> None:
    """Merge zoos built apart with disjoint seeds (other machines, more members later) into one."""
    with user_errors():
        from models.zoo.merging import merge_zoos

        with console.status(f"merging {len(sources)} zoos"):
            manifest = merge_zoos(sources, out)
        console.print(f"merged {manifest.size} members -> {out}")
        print_accuracy_table(manifest)


@zoo_app.command("canonicalize")
def canonicalize(
    directory: Annotated[Path, typer.Argument(help="A complete zoo directory.")],
    template: Annotated[
        list[str] | None, typer.Option(help="Template kind (medoid, average); repeat for both (default).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of weight matching's unit order.")] = 0,
    tol: Annotated[float, typer.Option(help="Average template: stop when it moves less (relative).")] = 1e-4,
    max_rounds: Annotated[int, typer.Option(help="Average template: most alignment rounds.")] = 10,
    data_dir: Annotated[Path | None, typer.Option(help="Folder holding the dataset files.")] = None,
) -> None:
    """Permute every member onto each template; write DIR/canonical/<template>/ and a summary."""
    with user_errors():
        from models.zoo.canonical import canonicalize_zoo
        from models.zoo.templates import TEMPLATES

        kinds = tuple(template) if template else TEMPLATES
        with progress_bar() as progress:
            task = progress.add_task("aligning", total=None)

            def on_progress(label: str, done: int, total: int) -> None:
                progress.update(task, description=label, completed=done, total=total)

            summary = canonicalize_zoo(
                directory,
                kinds,
                seed=seed,
                tol=tol,
                max_rounds=max_rounds,
                data_dir=str(data_dir) if data_dir else None,
                progress=on_progress,
            )
        print_distance_table(summary)


@zoo_app.command("report")
def report(directory: Annotated[Path, typer.Argument(help="A complete zoo directory.")]) -> None:
    """Accuracy table (mean/std/min/max per split), build time, and DIR/accuracy_hist.png."""
    with user_errors():
        from models.zoo.canonical import read_summary
        from models.zoo.report import HISTOGRAM, plot_accuracy_histogram
        from models.zoo.store import load_zoo

        zoo = load_zoo(directory)
        print_accuracy_table(zoo.manifest)
        path = plot_accuracy_histogram(zoo.manifest, Path(directory) / HISTOGRAM)
        console.print(f"wrote {path}")
        summary = read_summary(directory)
        if summary is not None:
            print_distance_table(summary)


def print_accuracy_table(manifest: Any) -> None:
    """Per-split accuracy statistics of a zoo manifest, in percent, plus its build time."""
    from models.zoo.report import accuracy_stats

    table = Table(title=f"{manifest.architecture['name']} zoo: {manifest.size} members")
    table.add_column("split")
    for column in ("mean %", "std %", "min %", "max %"):
        table.add_column(column, justify="right")
    for split, stats in accuracy_stats(manifest).items():
        table.add_row(split, *(f"{100 * stats[s]:.2f}" for s in ("mean", "std", "min", "max")))
    console.print(table)
    threads = manifest.environment.get("threads")
    console.print(f"build wall time: {manifest.build_wall_time_s:.1f} s ({threads} torch threads)")


def print_distance_table(summary: dict[str, Any]) -> None:
    """Mean pairwise L2 distance between members before and after alignment, per template."""
    table = Table(title="mean pairwise L2 distance between members (parameters)")
    for column in ("template", "before", "after", "reduction %", "rounds", "max val acc change"):
        table.add_column(column, justify="left" if column == "template" else "right")
    before = summary["mean_pairwise_distance_before"]
    for kind, info in summary["templates"].items():
        after = info["mean_pairwise_distance_after"]
        table.add_row(
            kind + (" (best)" if kind == summary["best"] else ""),
            f"{before:.3f}",
            f"{after:.3f}",
            f"{100 * (1 - after / before):.1f}",
            str(info["rounds"]),
            f"{info['max_val_acc_change']:.4f}",
        )
    console.print(table)
