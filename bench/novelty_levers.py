"""Issue 15's levers as an ablation on the accuracy vs functional-novelty plane (MLP families).

Every lever is a generator built and sampled through the product's code (`fit_flow`,
`write_generator`, `Generator.load`, `Generator.generate` with its screening), with one thing
changed. For each lever and seed (the seed is the flow's training seed and the sampling seed):
100 generated networks, measured on the test split and the validation split (mlp-digits: 360 and
180 images; mlp-fashion: 10,000 and 5,000):

- accuracy mean;
- functional novelty: the median over networks of the largest error-IoU with any zoo member
  (`models.zoo.novelty.max_error_iou`; the zoo's own leave-one-out median beside it);
- novelty ratio r (secondary; in the lever's own alignment of the zoo).

The reference curve is the cheapest baseline, a zoo member plus isotropic noise
(`models.zoo.baselines.noisy_members`) at several ratios, with the same post-processing as the
generated networks (the same screening object, the same candidate budget), per seed. A lever's
delta is acc(lever) - acc(noise interpolated at the lever's IoU), computed seed by seed (same
seed for both) and reported as mean +- std over seeds.

Levers (`--levers`, labels as in LEVERS):
  L0  the family's shipped recipe (flow budget `--iterations`)
  L1  zoo scale: a 1,000-member zoo, all 999 PCA components, flow settings `--scaled-*`
  L2  trajectory checkpoints: after 80%, 90% and 100% of the epochs of each of the 100 runs
      (mlp-digits: 24, 27, 30; mlp-fashion: 8, 9, 10; 300 codes), each aligned with its run's final
      permutation; 299 components
  L3  activation matching: the zoo aligned by activation correlation (models.canon.activation_matching)
  L4  residual outside the span: L0's flows, the isotropic residual replaced by a per-coordinate
      one from the zoo's leave-one-out residual outside its span (same norm as the shipped one,
      and at full size)
  L5  temperature 0.8 (L0's flows, ODE from 0.8 x noise)

Rows are appended to `--log` (JSON lines) as they are measured, and artifacts are kept under
`--work`, so a stopped run resumes; the table (bench/results/novelty_levers_<family>.{json,md}) is
rebuilt from the whole log at the end (or alone with `--table-only`).

Run: python -m bench.novelty_levers [--architecture mlp-fashion] --zoo100 DIR [--zoo1000 DIR]
     [--levers L0 L4 ...] [--seeds 0 1 2]
"""

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import RESULTS_DIR, machine
from models.flow import FlowTrainConfig
from models.generator import Generator
from models.generator.build import fit_flow, write_generator
from models.generator.evaluation import errors_and_accuracy
from models.generator.recipe import EncoderRecipe, FlowRecipe, GeneratorRecipe, recipe_for
from models.weightspace import WeightLayout
from models.zoo.baselines import noisy_members
from models.zoo.canonical import CanonicalZoo, load_canonical_zoo
from models.zoo.datasets import Dataset, load_dataset
from models.zoo.novelty import max_error_iou, nearest_distances

ARCHITECTURES = ("mlp-digits", "mlp-fashion")
NOISE_RATIOS = (0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0)
TRAJECTORY_FRACTIONS = (0.8, 0.9, 1.0)  # of the zoo recipe's epochs
# training images L3 aligns activations on (all of digits' 1,257; Fashion-MNIST's 55,000 would
# hold 100 members x 55,000 x 128 units x 4 activation sets, 11 GB, before standardizing)
ACTIVATION_IMAGES = 5000
SPLITS = ("test", "val")


@dataclass
class ZooContext:
    """A canonical zoo with what every lever on it is measured against."""

    name: str
    canonical: CanonicalZoo
    dataset: Dataset
    flat: torch.Tensor  # (K, D) canonical members
    loo: float  # the zoo's leave-one-out median nearest-member distance
    errors: dict[str, torch.Tensor]  # split -> (K, N) misclassified
    accuracy: dict[str, torch.Tensor]  # split -> (K,)
    reference: Generator | None = None  # the L0-style generator whose screening and residual all share


def split_of(dataset: Dataset, name: str):
    return getattr(dataset, name)


def with_seed(recipe: GeneratorRecipe, seed: int, iterations: int) -> GeneratorRecipe:
    train = replace(recipe.flow.train, seed=seed, iterations=iterations, device="cpu")
    return replace(recipe, flow=replace(recipe.flow, train=train))


def build(
    work: Path,
    label: str,
    ctx: ZooContext,
    recipe: GeneratorRecipe,
    stacked: dict[str, torch.Tensor] | None = None,
) -> tuple[Generator, float]:
    """The generator of `recipe` trained on `stacked` (default: the zoo), cached under `work`;
    its screening and residual sigma are the context's reference ones when it has them."""
    directory = work / label / ctx.canonical.zoo.architecture.name
    fit_s = 0.0
    if not (directory / "card.json").is_file():
        stacked = ctx.canonical.zoo.stacked if stacked is None else stacked
        start = time.perf_counter()
        encoder, flow, history = fit_flow(stacked, ctx.canonical.zoo.architecture, recipe)
        fit_s = time.perf_counter() - start
        canonical = CanonicalZoo(
            replace(ctx.canonical.zoo, stacked=stacked), ctx.canonical.template, ctx.canonical.kind
        )
        entry = {"final_loss": sum(history[-100:]) / 100, "fit_s": fit_s}
        write_generator(directory, canonical, ctx.dataset, recipe, encoder, flow, entry)
    generator = Generator.load(directory, device="cpu")
    fit_s = fit_s or generator.card.flow.get("fit_s", 0.0)
    if ctx.reference is not None:
        generator.screening = ctx.reference.screening
        generator.sampler.residual_sigma = ctx.reference.sampler.residual_sigma
    return generator, fit_s


def measure(
    generator: Generator,
    ctx: ZooContext,
    state: dict[str, torch.Tensor],
    zoo_flat: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Accuracy and novelty of stacked networks against the zoo, per split; r against `zoo_flat`
    (the zoo in the networks' alignment; default the canonical zoo)."""
    zoo_flat = ctx.flat if zoo_flat is None else zoo_flat
    flat = generator.decoder.layout.flatten_stacked(state).float().cpu()
    loo = nearest_distances(zoo_flat, zoo_flat, exclude_self=True).median().item()
    out: dict[str, Any] = {"r": nearest_distances(flat, zoo_flat).median().item() / loo}
    for name in SPLITS:
        errors, accuracy = errors_and_accuracy(generator, state, split_of(ctx.dataset, name))
        out[f"{name}_acc"] = accuracy.mean().item() * 100
        out[f"{name}_iou"] = max_error_iou(errors, ctx.errors[name]).median().item()
    return out


def noise_curve(
    ctx: ZooContext, seed: int, count: int, ratios: tuple[float, ...] = NOISE_RATIOS
) -> list[dict[str, Any]]:
    """Zoo member + isotropic noise at `ratios`, screened like the reference generator."""
    generator = ctx.reference
    screening, decoder = generator.screening, generator.decoder
    rows = []
    for ratio in ratios:
        pool = noisy_members(ctx.flat, screening.limit(count), ratio, ctx.loo, seed)
        state, counts = screening.screen(lambda start, n, pool=pool: pool[start : start + n], count, decoder)
        rows.append(
            {
                "kind": "noise",
                "zoo": ctx.name,
                "seed": seed,
                "ratio": ratio,
                "candidates_per_net": counts.candidates / count,
                "filled": counts.filled,
                **measure(generator, ctx, state),
            }
        )
    return rows


def load_context(name: str, directory: Path) -> ZooContext:
    canonical = load_canonical_zoo(directory, "average")
    architecture = canonical.zoo.architecture
    dataset = load_dataset(architecture.dataset)
    flat = WeightLayout.from_module(architecture.build()).flatten_stacked(canonical.zoo.stacked).float()
    loo = nearest_distances(flat, flat, exclude_self=True).median().item()
    return ZooContext(name, canonical, dataset, flat, loo, {}, {})


def fill_zoo_errors(ctx: ZooContext) -> dict[str, Any]:
    """The zoo's own errors per split (needs the reference generator's decoder) and its LOO row."""
    row: dict[str, Any] = {"kind": "zoo", "zoo": ctx.name, "members": len(ctx.flat)}
    for name in SPLITS:
        errors, accuracy = errors_and_accuracy(
            ctx.reference, ctx.canonical.zoo.stacked, split_of(ctx.dataset, name)
        )
        ctx.errors[name], ctx.accuracy[name] = errors, accuracy
        row[f"{name}_acc"] = accuracy.mean().item() * 100
        row[f"{name}_iou"] = max_error_iou(errors, errors, exclude_self=True).median().item()
    return row


def generated_row(
    lever: str,
    setting: str,
    ctx: ZooContext,
    seed: int,
    generator: Generator,
    count: int,
    fit_s: float,
    zoo_flat: torch.Tensor | None = None,
) -> dict[str, Any]:
    result = generator.generate(count, seed, evaluate=False)
    counts = result.metadata.screening_counts() or {}
    return {
        "kind": "lever",
        "lever": lever,
        "setting": setting,
        "zoo": ctx.name,
        "seed": seed,
        "fit_s": fit_s,
        "candidates_per_net": counts.get("candidates", count) / count,
        "filled": counts.get("filled", 0),
        **measure(generator, ctx, result.state, zoo_flat),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--architecture", choices=ARCHITECTURES, default="mlp-digits")
    parser.add_argument("--zoo100", type=Path, required=True, help="the canonicalized 100-member zoo")
    parser.add_argument("--zoo1000", type=Path, help="a canonicalized 1,000-member zoo (lever L1)")
    parser.add_argument("--levers", nargs="+", default=["L0", "L4", "L5", "L3", "L2", "L1"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--iterations", type=int, default=20_000, help="flow steps on the 100-member zoo")
    parser.add_argument("--scaled-iterations", type=int, default=20_000, help="flow steps, 1,000-member zoo")
    parser.add_argument("--scaled-hidden", type=int, default=512)
    parser.add_argument("--scaled-depth", type=int, default=1)
    parser.add_argument("--scaled-batch", type=int, default=64)
    parser.add_argument("--scaled-dropout", type=float, default=0.1)
    parser.add_argument("--scaled-components", type=int, default=999)
    parser.add_argument("--work", type=Path, default=Path("/root/scratch-levers/work"))
    parser.add_argument("--log", type=Path, help="default: bench/results/novelty_levers_<family>.jsonl")
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument(
        "--noise-only", nargs="*", default=None, help="only the noise curves of these zoos (zoo100, zoo1000)"
    )
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.log = args.log or RESULTS_DIR / f"novelty_levers_{args.architecture}.jsonl"
    if args.table_only:
        write_table(args.log, args.architecture)
        return
    if "L1" in args.levers and args.zoo1000 is None:
        parser.error("lever L1 needs --zoo1000 (a canonicalized 1,000-member zoo); or leave L1 out")
    args.work = args.work / args.architecture
    args.work.mkdir(parents=True, exist_ok=True)
    args.log.parent.mkdir(parents=True, exist_ok=True)
    done = {
        (r["kind"], r.get("lever", r.get("ratio")), r.get("setting"), r["zoo"], r.get("seed"))
        for r in read_log(args.log)
    }

    def log(row: dict[str, Any]) -> None:
        with args.log.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)

    def logged(kind: str, key: Any, setting: str | None, zoo: str, seed: int | None) -> bool:
        return (kind, key, setting, zoo, seed) in done

    base = recipe_for(args.architecture)
    contexts: dict[str, ZooContext] = {}

    def context(name: str) -> ZooContext:
        if name in contexts:
            return contexts[name]
        ctx = load_context(name, args.zoo100 if name == "zoo100" else args.zoo1000)
        # the reference generator: the zoo's L0-style artifact (seed 0) gives screening and residual
        if name == "zoo100":
            ctx.reference = build(
                args.work, f"L0-it{args.iterations}-s0", ctx, with_seed(base, 0, args.iterations)
            )[0]
        else:
            ctx.reference = build(args.work, scaled_label(args, 0), ctx, scaled_recipe(args, base, 0))[0]
        zoo_row = fill_zoo_errors(ctx)
        if not logged("zoo", None, None, name, None):
            log(zoo_row)
        for seed in args.seeds:
            missing = tuple(r for r in NOISE_RATIOS if not logged("noise", r, None, name, seed))
            for row in noise_curve(ctx, seed, args.count, missing):
                log(row)
        contexts[name] = ctx
        return ctx

    for name in args.noise_only or []:
        context(name)
    for lever in [] if args.noise_only is not None else args.levers:
        for seed in args.seeds:
            for setting, make in lever_settings(lever, args, base, context):
                zoo = "zoo1000" if lever == "L1" else "zoo100"
                if logged("lever", lever, setting, zoo, seed):
                    continue
                ctx = context(zoo)
                generator, fit_s, zoo_flat = make(seed)
                log({**generated_row(lever, setting, ctx, seed, generator, args.count, fit_s, zoo_flat)})
    write_table(args.log, args.architecture)


def scaled_label(args: argparse.Namespace, seed: int) -> str:
    return (
        f"L1-c{args.scaled_components}-h{args.scaled_hidden}-d{args.scaled_depth}-b{args.scaled_batch}"
        f"-p{args.scaled_dropout}-it{args.scaled_iterations}-s{seed}"
    )


def scaled_recipe(args: argparse.Namespace, base: GeneratorRecipe, seed: int) -> GeneratorRecipe:
    recipe = replace(
        base,
        encoder=EncoderRecipe(n_components=args.scaled_components),
        flow=FlowRecipe(
            hidden=args.scaled_hidden,
            depth=args.scaled_depth,
            dropout=args.scaled_dropout,
            train=FlowTrainConfig(batch_size=args.scaled_batch),
        ),
    )
    return with_seed(recipe, seed, args.scaled_iterations)


Make = Callable[[int], tuple[Generator, float, torch.Tensor | None]]


def lever_settings(
    lever: str, args: argparse.Namespace, base: GeneratorRecipe, context: Callable[[str], ZooContext]
) -> list[tuple[str, Make]]:
    """(setting description, seed -> (generator, flow fit seconds, zoo in the generator's alignment))."""
    it = args.iterations

    def l0(seed: int) -> tuple[Generator, float]:
        return build(args.work, f"L0-it{it}-s{seed}", context("zoo100"), with_seed(base, seed, it))

    if lever == "L0":
        return [(f"shipped recipe, {it} flow steps, residual 0.10, screening", lambda s: (*l0(s), None))]
    if lever == "L1":

        def l1(seed: int):
            ctx = context("zoo1000")
            return (*build(args.work, scaled_label(args, seed), ctx, scaled_recipe(args, base, seed)), None)

        setting = (
            f"1,000 members, {args.scaled_components} comps, hidden {args.scaled_hidden} x depth "
            f"{args.scaled_depth}, dropout {args.scaled_dropout}, batch {args.scaled_batch}, "
            f"{args.scaled_iterations} steps"
        )
        return [(setting, l1)]
    if lever == "L2":

        def l2(seed: int):
            ctx = context("zoo100")
            stacked = trajectory_zoo(args.work, ctx)
            recipe = replace(
                with_seed(base, seed, it),
                encoder=EncoderRecipe(n_components=len(next(iter(stacked.values()))) - 1),
            )
            return (*build(args.work, f"L2-it{it}-s{seed}", ctx, recipe, stacked), None)

        epochs = trajectory_epochs(context("zoo100"))
        setting = f"epochs {', '.join(map(str, epochs))} of each run (300 codes, 299 comps), {it} steps"
        return [(setting, l2)]
    if lever == "L3":

        def l3(seed: int):
            ctx = context("zoo100")
            stacked = activation_zoo(args.work, ctx)
            flat = (
                WeightLayout.from_module(ctx.canonical.zoo.architecture.build())
                .flatten_stacked(stacked)
                .float()
            )
            return (*build(args.work, f"L3-it{it}-s{seed}", ctx, with_seed(base, seed, it), stacked), flat)

        return [(f"activation-matched zoo (joint, activation template), {it} steps", l3)]
    if lever == "L4":
        from models.levers.samplers import ShapedResidualSampler, loo_residual_sigma

        def shaped(scale: str) -> Make:
            def make(seed: int):
                ctx = context("zoo100")
                generator, fit_s = l0(seed)
                sigma = loo_residual_sigma(ctx.flat)
                iso = ctx.reference.sampler.residual_sigma * len(sigma) ** 0.5  # the shipped residual's norm
                factor = iso / sigma.norm().item() if scale == "matched" else 1.0
                generator.sampler = ShapedResidualSampler(
                    generator.sampler.flow, generator.sampler.encoder, sigma * factor
                )
                return generator, fit_s, None

            return make

        return [
            ("L0's flows + LOO out-of-span residual, norm of the shipped residual", shaped("matched")),
            ("L0's flows + LOO out-of-span residual, full size", shaped("full")),
        ]
    if lever == "L5":
        from models.levers.samplers import TemperatureSampler

        def tempered(seed: int):
            generator, fit_s = l0(seed)
            sampler = generator.sampler
            generator.sampler = TemperatureSampler(sampler.flow, sampler.encoder, sampler.residual_sigma, 0.8)
            return generator, fit_s, None

        return [("L0's flows, sampling temperature 0.8", tempered)]
    raise ValueError(f"unknown lever {lever}")


def trajectory_epochs(ctx: ZooContext) -> tuple[int, ...]:
    """The epochs after TRAJECTORY_FRACTIONS of the zoo recipe's (the last is the trained member)."""
    epochs = ctx.canonical.zoo.manifest.recipe["epochs"]
    return tuple(max(1, round(fraction * epochs)) for fraction in TRAJECTORY_FRACTIONS)


def trajectory_zoo(work: Path, ctx: ZooContext) -> dict[str, torch.Tensor]:
    """Checkpoints after `trajectory_epochs` of the zoo's 100 runs, aligned by their run's permutation."""
    from safetensors.torch import load_file, save_file

    from models.levers.trajectory import align_trajectories, train_with_checkpoints
    from models.zoo.templates import average_template
    from models.zoo.train import Recipe

    path = work / "trajectory-zoo.safetensors"
    if path.is_file():
        return load_file(str(path))
    zoo = ctx.canonical.zoo
    recipe = Recipe.from_dict(zoo.manifest.recipe)
    checkpoints = train_with_checkpoints(
        zoo.architecture, ctx.dataset, zoo.manifest.seeds, recipe, trajectory_epochs(ctx)
    )
    result = average_template(zoo.architecture, checkpoints[recipe.epochs], seed=0)
    stacked = align_trajectories(zoo.architecture, checkpoints, result.permutations)
    save_file({k: v.contiguous() for k, v in stacked.items()}, str(path))
    return stacked


def activation_zoo(work: Path, ctx: ZooContext) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file, save_file

    from models.canon.activation_matching import activation_align

    path = work / "activation-zoo.safetensors"
    if path.is_file():
        return load_file(str(path))
    result = activation_align(
        ctx.canonical.zoo.architecture,
        ctx.canonical.zoo.stacked,
        ctx.dataset.train.images[:ACTIVATION_IMAGES],
    )
    print(f"activation alignment: {result.rounds} rounds, changed {result.changed}", flush=True)
    save_file({k: v.contiguous() for k, v in result.aligned.items()}, str(path))
    return result.aligned


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def interpolate(noise: list[dict[str, Any]], split: str, iou: float) -> tuple[float, bool]:
    """Noise accuracy at error-IoU `iou` on one seed's curve (linear in IoU), and whether `iou` lies
    inside the curve's range (False: clamped to its end)."""
    points = sorted((r[f"{split}_iou"], r[f"{split}_acc"]) for r in noise)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return float(np.interp(iou, xs, ys)), xs[0] <= iou <= xs[-1]


def pm(values: list[float], digits: int = 2) -> str:
    mean = float(np.mean(values))
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def write_table(log_path: Path, architecture: str) -> None:
    """Aggregate the log into bench/results/novelty_levers_<architecture>.{json,md}."""
    rows = read_log(log_path)
    latest: dict[tuple, dict[str, Any]] = {}
    for row in rows:
        latest[
            (row["kind"], row.get("lever"), row.get("setting"), row.get("ratio"), row["zoo"], row.get("seed"))
        ] = row
    rows = list(latest.values())
    zoos = {r["zoo"]: r for r in rows if r["kind"] == "zoo"}
    noise = [r for r in rows if r["kind"] == "noise"]
    levers = [r for r in rows if r["kind"] == "lever"]
    table = []
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in levers:
        groups.setdefault((r["lever"], r["setting"], r["zoo"]), []).append(r)
    for (lever, setting, zoo), members in groups.items():
        members = sorted(members, key=lambda r: r["seed"])
        entry: dict[str, Any] = {
            "lever": lever,
            "setting": setting,
            "zoo": zoo,
            "seeds": [r["seed"] for r in members],
        }
        for split in SPLITS:
            deltas, inside = [], True
            for r in members:
                curve = [n for n in noise if n["zoo"] == zoo and n["seed"] == r["seed"]]
                if not curve:
                    continue
                at, ok = interpolate(curve, split, r[f"{split}_iou"])
                deltas.append(r[f"{split}_acc"] - at)
                inside &= ok
            entry[f"{split}_acc"] = [r[f"{split}_acc"] for r in members]
            entry[f"{split}_iou"] = [r[f"{split}_iou"] for r in members]
            entry[f"{split}_delta_vs_noise"] = deltas
            entry[f"{split}_inside_noise_range"] = inside
        entry["r"] = [r["r"] for r in members]
        entry["candidates_per_net"] = [r["candidates_per_net"] for r in members]
        entry["filled"] = [r["filled"] for r in members]
        entry["fit_s"] = [r["fit_s"] for r in members]
        entry["verdict"] = verdict(entry)
        table.append(entry)
    curves = {}
    for r in noise:
        curves.setdefault(r["zoo"], {}).setdefault(r["ratio"], []).append(r)
    noise_table = [
        {
            "zoo": zoo,
            "ratio": ratio,
            **{f"{s}_acc": [r[f"{s}_acc"] for r in rs] for s in SPLITS},
            **{f"{s}_iou": [r[f"{s}_iou"] for r in rs] for s in SPLITS},
            "r": [r["r"] for r in rs],
            "candidates_per_net": [r["candidates_per_net"] for r in rs],
        }
        for zoo, by_ratio in curves.items()
        for ratio, rs in sorted(by_ratio.items())
    ]
    payload = {
        "benchmark": "novelty_levers",
        "machine": machine(),
        "architecture": architecture,
        "zoo": zoos,
        "levers": table,
        "noise_curve": noise_table,
        "log": str(log_path),
    }
    (RESULTS_DIR / f"novelty_levers_{architecture}.json").write_text(json.dumps(payload, indent=2))
    (RESULTS_DIR / f"novelty_levers_{architecture}.md").write_text(markdown(payload))
    print(markdown(payload))


def verdict(entry: dict[str, Any]) -> str:
    """Per split: 'above' noise if every seed's delta is positive and the mean delta exceeds its
    seed-to-seed std, 'below' if the mirror image holds, else 'level'; 'outside' when the lever's
    IoU lies beyond the noise curve's range (its delta is then against the curve's end). A lever
    'beats noise' only if it is above on both splits."""
    if len(entry["seeds"]) < 3:
        return "fewer than 3 seeds: no claim"
    results = {}
    for split in SPLITS:
        d = entry[f"{split}_delta_vs_noise"]
        mean, std = float(np.mean(d)), float(np.std(d, ddof=1))
        if min(d) > 0 and mean > std:
            results[split] = "above"
        elif max(d) < 0 and -mean > std:
            results[split] = "below"
        else:
            results[split] = "level"
        if not entry[f"{split}_inside_noise_range"]:
            results[split] += " (outside the curve)"
    if all(r == "above" for r in results.values()):
        return "beats noise"
    if len(set(results.values())) == 1:
        return f"{results[SPLITS[0]]} noise"
    return ", ".join(f"{split}: {r}" for split, r in results.items())


def markdown(payload: dict[str, Any]) -> str:
    lines = []
    for name, zoo in payload["zoo"].items():
        lines.append(
            f"- {name}: {zoo['members']} members, test acc {zoo['test_acc']:.2f} %, zoo leave-one-out "
            f"error-IoU median {zoo['test_iou']:.2f} (test), {zoo['val_iou']:.2f} (val)"
        )
    lines += [
        "",
        "| lever | setting | zoo | test acc % | test IoU | r | Δ vs noise @ IoU, test | Δ, val "
        "| cand./net | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in payload["levers"]:
        clamped = {s: "" if e[f"{s}_inside_noise_range"] else " (clamped)" for s in SPLITS}
        lines.append(
            f"| {e['lever']} | {e['setting']} | {e['zoo']} | {pm(e['test_acc'])} | {pm(e['test_iou'], 3)} | "
            f"{pm(e['r'])} | {pm(e['test_delta_vs_noise'])}{clamped['test']} | "
            f"{pm(e['val_delta_vs_noise'])}{clamped['val']} | "
            f"{np.mean(e['candidates_per_net']):.2f} | {e['verdict']} |"
        )
    lines += [
        "",
        "Noise reference (zoo member + isotropic noise, screened alike; mean ± std over seeds):",
        "",
        "| zoo | ratio | test acc % | test IoU | val acc % | val IoU | r | cand./net |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in payload["noise_curve"]:
        lines.append(
            f"| {n['zoo']} | {n['ratio']} | {pm(n['test_acc'])} | {pm(n['test_iou'], 3)} | "
            f"{pm(n['val_acc'])} | {pm(n['val_iou'], 3)} | {pm(n['r'])} | "
            f"{np.mean(n['candidates_per_net']):.2f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
