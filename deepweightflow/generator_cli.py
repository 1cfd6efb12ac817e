"""`dwf generator build`, `dwf evaluate` and local `dwf generate`: generators from zoos, no server.

torch and models are imported inside the commands, so `dwf --help` stays fast.
"""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from deepweightflow.zoo_cli import console, progress_bar, user_errors

if TYPE_CHECKING:
    from contract.card import AccuracyStats, GeneratedEntry
    from contract.result_file import ResultMetadata

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_GENERATORS = REPO_ROOT / "generators"
DEFAULT_ZOOS = REPO_ROOT / "build" / "zoos"

generator_app = typer.Typer(help="Build and inspect generator artifacts.", no_args_is_help=True)

GeneratorsOption = Annotated[Path, typer.Option(help="Folder of generator artifacts.")]
ZooOption = Annotated[Path | None, typer.Option(help="Canonicalized zoo folder (default build/zoos/ARCH).")]
DEFAULT_STEPS = "1,2,4,8,16,32"
BaselineCountOption = Annotated[
    int | None, typer.Option(help="Networks per baseline row and steps-sweep row (default: count).")
]
StepsOption = Annotated[str, typer.Option(help="Sampler step counts for the accuracy-vs-steps table.")]


def parse_steps(text: str) -> tuple[int, ...]:
    """Step counts from text such as "1,4,16"; a clear error for anything else."""
    try:
        steps = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        steps = ()
    if not steps or min(steps) < 1:
        raise typer.BadParameter(f"--steps takes positive integers separated by commas, got {text!r}")
    return steps


@generator_app.command("build")
def build(
    architecture: Annotated[str, typer.Argument(help="Registered architecture with a canonicalized zoo.")],
    zoo: ZooOption = None,
    generators: GeneratorsOption = DEFAULT_GENERATORS,
    components: Annotated[int | None, typer.Option(help="PCA components (default: the recipe's).")] = None,
    hidden: Annotated[int | None, typer.Option(help="Velocity network width.")] = None,
    iterations: Annotated[int | None, typer.Option(help="Flow training steps.")] = None,
    evaluate_count: Annotated[
        int, typer.Option(help="Networks generated for the card's table; 0 skips.")
    ] = 100,
    baseline_count: BaselineCountOption = None,
    steps: StepsOption = DEFAULT_STEPS,
    reuse_flow: Annotated[
        bool,
        typer.Option(
            "--reuse-flow",
            help="Keep the existing artifact's encoder and flow; rewrite only sampling settings and data.",
        ),
    ] = False,
) -> None:
    """Fit the encoder and flow on ARCHITECTURE's canonical zoo; write generators/ARCHITECTURE/."""
    with user_errors():
        from dataclasses import replace

        from models.generator import read_card
        from models.generator.build import build_from_zoo
        from models.generator.recipe import recipe_for

        recipe = recipe_for(architecture)
        if components is not None:
            recipe = replace(recipe, encoder=replace(recipe.encoder, n_components=components))
        if hidden is not None:
            recipe = replace(recipe, flow=replace(recipe.flow, hidden=hidden))
        if iterations is not None:
            train = replace(recipe.flow.train, iterations=iterations)
            recipe = replace(recipe, flow=replace(recipe.flow, train=train))
        out = generators / architecture
        source = zoo or DEFAULT_ZOOS / architecture
        if reuse_flow:
            build_from_zoo(source, out, recipe, reuse_flow=True)
        else:
            with progress_bar() as progress:
                task = progress.add_task("flow training", total=recipe.flow.train.iterations)

                def on_step(done: int, total: int, loss: float) -> None:
                    progress.update(task, completed=done, description=f"flow training (loss {loss:.4f})")

                build_from_zoo(source, out, recipe, progress=on_step)
        console.print(f"wrote {out}")
        if read_card(out, verify=False).input.saw_validation:
            console.print(
                "[yellow]the zoo members saw the validation split: the card's validation figures "
                "(settings sweep, per-network validation accuracy) are not held out"
            )
        if evaluate_count:
            run_evaluation(
                architecture, zoo, generators, evaluate_count, 0, "test", baseline_count, parse_steps(steps)
            )


@generator_app.command("list")
def list_generators(generators: GeneratorsOption = DEFAULT_GENERATORS) -> None:
    """The generator artifacts found, with their zoo and generated accuracy."""
    from models.generator import discover_generators, read_card

    table = Table(title=f"generators in {generators}")
    for column in (
        "name",
        "parameters",
        "zoo test acc %",
        "generated test acc %",
        "error IoU (zoo)",
        "novelty r",
    ):
        table.add_column(column)
    for name, path in discover_generators(generators).items():
        card = read_card(path, verify=False)
        generated = card.generated
        table.add_row(
            name,
            f"{card.parameter_count:,}",
            stats_text(card.zoo.test_accuracy),
            stats_text(None if generated is None else generated.test_accuracy),
            iou_text(generated),
            "-" if generated is None else f"{generated.novelty_ratio:.2f}",
        )
    console.print(table)


def iou_text(generated: "GeneratedEntry | None") -> str:
    """Median error IoU with the nearest zoo member (the zoo's leave-one-out in brackets)."""
    if generated is None or generated.error_iou is None:
        return "-"
    zoo = "" if generated.zoo_error_iou is None else f" ({generated.zoo_error_iou:.2f})"
    return f"{generated.error_iou:.2f}{zoo}"


def stats_text(stats: "AccuracyStats | None") -> str:
    return "-" if stats is None else f"{stats.mean:.2f} ± {stats.std:.2f}"


FrontierOption = Annotated[
    bool,
    typer.Option(
        "--frontier/--no-frontier",
        help="Sweep every baseline family's strength and read its accuracy at the generated error IoU.",
    ),
]
FrontierCountOption = Annotated[
    int | None, typer.Option(help="Networks per frontier point (default: the baseline count).")
]


def evaluate(
    architecture: Annotated[str, typer.Argument(help="Generator to evaluate.")],
    zoo: ZooOption = None,
    generators: GeneratorsOption = DEFAULT_GENERATORS,
    count: Annotated[int, typer.Option(help="Networks to generate.")] = 100,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    split: Annotated[str, typer.Option(help="test (reported) or val (for choosing settings).")] = "test",
    baseline_count: BaselineCountOption = None,
    steps: StepsOption = DEFAULT_STEPS,
    frontier: FrontierOption = True,
    frontier_count: FrontierCountOption = None,
    examples: Annotated[
        int | None,
        typer.Option(help="Measure on the split's first N examples only (costly families on a CPU)."),
    ] = None,
) -> None:
    """Zoo vs generated vs baselines: accuracy, functional novelty (error IoU, disagreement,
    ensembles), baselines at equal error IoU, r, steps. On the test split the table replaces the
    artifact's card.json `evaluation` and evaluation.png; the flow is not retrained."""
    with user_errors():
        run_evaluation(
            architecture,
            zoo,
            generators,
            count,
            seed,
            split,
            baseline_count,
            parse_steps(steps),
            frontier=frontier,
            frontier_count=frontier_count,
            examples=examples,
        )


generator_app.command("evaluate")(evaluate)


def run_evaluation(
    architecture: str,
    zoo: Path | None,
    generators: Path,
    count: int,
    seed: int,
    split: str = "test",
    baseline_count: int | None = None,
    steps_sweep: tuple[int, ...] = (1, 2, 4, 8, 16, 32),
    frontier: bool = True,
    frontier_count: int | None = None,
    examples: int | None = None,
) -> None:
    from models.generator import Generator
    from models.generator.evaluation import evaluate_generator, record_evaluation
    from models.zoo.canonical import load_canonical_zoo
    from models.zoo.datasets import Split, load_dataset

    if split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    generator = Generator.load(generators / architecture)
    canonical = load_canonical_zoo(zoo or DEFAULT_ZOOS / architecture, generator.card.zoo.template)
    dataset = load_dataset(generator.architecture.dataset, preprocessing=generator.card.input.preprocessing)
    data = getattr(dataset, split)
    if examples is not None:
        if examples < 1:
            raise ValueError(f"--examples must be at least 1, got {examples}")
        data = Split(data.images[:examples], data.labels[:examples])
    with console.status(f"evaluating {count} generated {architecture} networks on the {split} split"):
        evaluation = evaluate_generator(
            generator,
            canonical.zoo.stacked,
            data,
            count,
            seed,
            steps_sweep,
            split_name=split if examples is None else f"{split} (first {len(data.labels)} examples)",
            baseline_count=baseline_count,
            train=dataset.train if frontier else None,
            frontier_count=frontier_count,
        )
    print_evaluation(architecture, evaluation.table)
    if split == "test":
        record_evaluation(generators / architecture, evaluation)
        console.print(f"recorded in {generators / architecture / 'card.json'} and evaluation.png")


def print_evaluation(architecture: str, table: dict[str, Any]) -> None:
    per_row = f"{table['count']} generated, {table.get('baseline_count', table['count'])} per baseline"
    out = Table(title=f"{architecture}: {per_row}, {table['split']} split")
    columns = {
        "mean": "mean %",
        "std": "std",
        "min": "min %",
        "share_at_or_above_zoo_min": ">= zoo min",
        "error_iou_median": "error IoU",
        "disagreement_median": "disagree",
        "ensemble_accuracy_mean": "ens10 acc %",
        "ensemble_nll_mean": "ens10 NLL",
        "novelty_ratio": "r",
        "self_l2_median": "L2 to own",
    }
    out.add_column("row", no_wrap=True)
    for header in (*columns.values(), "draws", "drawn"):
        out.add_column(header, justify="right")
    for name, row in table["rows"].items():
        cells = (
            "-"
            if row.get(c) is None
            else f"{row[c]:.3f}"
            if c in ("ensemble_nll_mean", "disagreement_median")
            else f"{row[c]:.2f}"
            for c in columns
        )
        draws = str(row.get("ensemble_draws", "-"))
        out.add_row(name, *cells, draws, str(row.get("candidates", row["count"])))  # screening draws more
    console.print(out)
    if "frontier" in table:
        print_frontier(table["frontier"], table["rows"]["generated"]["mean"])
    steps = Table(title="accuracy vs sampler steps")
    for column in ("sampler", "steps", "mean", "std", "min"):
        steps.add_column(column)
    for row in table["steps_sweep"]:
        steps.add_row(
            row["sampler"], str(row["steps"]), f"{row['mean']:.2f}", f"{row['std']:.2f}", f"{row['min']:.2f}"
        )
    console.print(steps)


def print_frontier(frontier: dict[str, Any], generated_mean: float) -> None:
    """Each baseline family's accuracy at the generated networks' error IoU."""
    out = Table(
        title=f"baselines at the generated error IoU {frontier['target_error_iou']:.3f} "
        f"(zoo leave-one-out {frontier['zoo_error_iou']:.3f}), {frontier['count']} networks per point"
    )
    for column in ("family", "strength", "acc % at IoU", "generated - it", "ens10 acc %", "r", "in range"):
        out.add_column(column, justify="left" if column == "family" else "right")
    for name, family in frontier["families"].items():
        reading = family["at_generator_iou"]
        out.add_row(
            name,
            f"{reading['strength']:.3f}",
            f"{reading['mean']:.2f}",
            f"{generated_mean - reading['mean']:+.2f}",
            f"{reading.get('ensemble_accuracy_mean', float('nan')):.2f}",
            f"{reading.get('novelty_ratio', float('nan')):.2f}",
            "yes" if reading["within_range"] else "no",
        )
    for name, reason in frontier.get("skipped", {}).items():
        out.add_row(name, "-", "-", "-", "-", "-", f"skipped: {reason}")
    console.print(out)


def generate_local(
    architecture: str,
    count: int,
    seed: int,
    out: Path,
    generators: Path,
    sampler: str | None = None,
    steps: int | None = None,
    validate: bool = False,
) -> "ResultMetadata":
    """Generate from a local artifact with a progress bar; write the job-result safetensors file."""
    from contract.files import atomic_write
    from models.generator import ArtifactError, Generator, discover_generators, write_result

    directory = generators / architecture
    if not (directory / "card.json").is_file():
        known = ", ".join(discover_generators(generators)) or "none"
        raise ArtifactError(f"no generator {architecture!r} in {generators}; available: {known}")
    generator = Generator.load(directory)
    with progress_bar() as progress:
        task = progress.add_task("sampling", total=count)
        ensemble = generator.generate(
            count,
            seed,
            sampler,
            steps,
            progress=lambda done, total: progress.update(task, completed=done),
            evaluate=validate,
        )
    atomic_write(out, lambda path: write_result(path, ensemble))
    counts = ensemble.metadata.screening_counts()
    if counts is not None:
        console.print(
            f"screening: {counts['accepted']} of {counts['candidates']} candidates passed"
            + (f", {counts['filled']} filled with the best rejected" if counts["filled"] else "")
        )
    if ensemble.val_accuracy is not None:
        acc = ensemble.val_accuracy * 100
        console.print(
            f"validation accuracy: mean {acc.mean():.2f}%, min {acc.min():.2f}%, max {acc.max():.2f}%"
        )
    console.print(f"wrote {count} networks to {out}")
    console.print(f"input: {generator.card.input.usage()}")
    return ensemble.metadata
