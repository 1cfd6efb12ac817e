"""Zoo training throughput: 100 mlp-fashion members trained batched (vmap over stacked
parameters, chunks of `--chunk-size`) against one member after another, for a fixed
number of optimizer steps each; plus the wall time of every zoo built under build/zoos/.

One-by-one is timed on `--sequential` members and extrapolated to all of them, in the
same run, two ways: the batched code with K = 1 (the reference the equality test uses),
and a plain PyTorch loop (nn.Module + the same optimizer and data order).

Run: python -m bench.zoo_training [--members 100 --steps 40 --chunk-size 25]
"""

import argparse
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from bench.common import report
from models.architectures import Architecture, get_architecture
from models.zoo.datasets import Dataset, load_dataset
from models.zoo.report import accuracy_stats
from models.zoo.store import read_manifest
from models.zoo.train import (
    Recipe,
    default_recipe,
    learning_rate,
    make_optimizer,
    shuffle_seed,
    train_members,
    training_split,
)

ZOOS_DIR = Path(__file__).resolve().parents[1] / "build" / "zoos"


def plain_loop(arch: Architecture, dataset: Dataset, seed: int, recipe: Recipe, steps: int) -> None:
    """One member, trained the usual way: its own nn.Module, optimizer and mini-batches."""
    torch.manual_seed(seed)
    net = arch.build().train()
    optimizer = make_optimizer(recipe, list(net.parameters()))
    train = training_split(dataset, recipe)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(shuffle_seed(seed)))
    total = recipe.epochs * (len(train) // recipe.batch_size)
    for step in range(steps):
        batch = order[step * recipe.batch_size : (step + 1) * recipe.batch_size]
        loss = torch.nn.functional.cross_entropy(net(train.images[batch]), train.labels[batch])
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(recipe, step, total)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def zoo_builds() -> list[dict]:
    """One row per zoo manifest under build/zoos/ (complete or not)."""
    rows = []
    for path in sorted(ZOOS_DIR.glob("*/manifest.json")):
        manifest = read_manifest(path.parent)
        test = accuracy_stats(manifest)["test"] if manifest.members else None
        rows.append(
            {
                "zoo": manifest.architecture["name"],
                "members": manifest.members_done,
                "epochs": manifest.recipe["epochs"],
                "examples": manifest.recipe["train_subset"] or "all",
                "build s": round(manifest.build_wall_time_s, 1),
                "s/member": round(manifest.build_wall_time_s / max(manifest.members_done, 1), 2),
                "threads": manifest.environment.get("threads"),
                "test mean %": round(100 * test["mean"], 2) if test else None,
                "test min %": round(100 * test["min"], 2) if test else None,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--architecture", default="mlp-fashion")
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per member")
    parser.add_argument("--chunk-size", type=int, default=25, help="members trained together")
    parser.add_argument("--sequential", type=int, default=3, help="members timed one by one")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    arch = get_architecture(args.architecture)
    dataset = load_dataset(arch.dataset)
    recipe = default_recipe(arch.name)
    seeds = list(range(args.members))
    train_members(arch, dataset, seeds[:2], recipe, max_steps=2)  # warm-up
    plain_loop(arch, dataset, 0, recipe, 2)

    batched_s = sum(
        seconds(
            lambda c=c: train_members(
                arch, dataset, seeds[c : c + args.chunk_size], recipe, max_steps=args.steps
            )
        )
        for c in range(0, args.members, args.chunk_size)
    )
    sample = seeds[: args.sequential]
    k1_s = sum(
        seconds(lambda s=s: train_members(arch, dataset, [s], recipe, max_steps=args.steps)) for s in sample
    )
    plain_s = sum(seconds(lambda s=s: plain_loop(arch, dataset, s, recipe, args.steps)) for s in sample)
    scale = args.members / args.sequential
    member_steps = args.members * args.steps
    rows = [
        {
            "method": f"batched, chunks of {args.chunk_size}",
            "seconds": batched_s,
            "members timed": args.members,
        },
        {
            "method": "one by one, same code K=1",
            "seconds": k1_s * scale,
            "members timed": args.sequential,
        },
        {
            "method": "one by one, plain nn.Module loop",
            "seconds": plain_s * scale,
            "members timed": args.sequential,
        },
    ]
    for row in rows:
        row["member-steps/s"] = member_steps / row["seconds"]
        row["batched speedup"] = row["seconds"] / batched_s
    builds = zoo_builds()
    report(
        "zoo_training",
        f"Train {args.members} {arch.name} members for {args.steps} steps (batch {recipe.batch_size})",
        rows,
        {"architecture": arch.name, "members": args.members, "steps": args.steps, "zoo_builds": builds},
    )
    if builds:
        table = Table(title="zoo builds (from build/zoos/*/manifest.json)")
        for column in builds[0]:
            table.add_column(column, justify="right")
        for row in builds:
            table.add_row(*(str(v) for v in row.values()))
        Console(width=120).print(table)


if __name__ == "__main__":
    main()
