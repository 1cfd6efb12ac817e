"""Batched evaluation of 100 mlp-fashion networks on the Fashion-MNIST test set
(one vmapped pass) against a Python loop over the same networks.

Run: python -m bench.batched_eval [--count 100]
"""

import argparse

import torch

from bench.common import report, timed
from models.architectures import get_architecture
from models.weightspace import batched_evaluate, eval_mode, stack_state_dicts
from models.zoo.datasets import load_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--architecture", default="mlp-fashion")
    args = parser.parse_args()

    arch = get_architecture(args.architecture)
    test = load_dataset(arch.dataset).test
    nets = []
    for seed in range(args.count):
        torch.manual_seed(seed)
        nets.append(arch.build().eval())
    stacked = stack_state_dicts([n.state_dict() for n in nets])
    module = arch.build()

    def loop() -> torch.Tensor:
        with eval_mode(module):
            return torch.tensor(
                [(net(test.images).argmax(1) == test.labels).float().mean().item() for net in nets]
            )

    def batched() -> torch.Tensor:
        return batched_evaluate(module, stacked, test.images, test.labels, batch_size=1000)[1]

    loop_s, loop_acc = timed(loop)
    batched_s, batched_acc = timed(batched)
    assert torch.allclose(loop_acc, batched_acc), "batched and looped accuracies disagree"
    images = args.count * len(test)
    rows = [
        {"method": "python loop", "seconds": loop_s, "network-images/s": images / loop_s, "speedup": 1.0},
        {
            "method": "batched (vmap)",
            "seconds": batched_s,
            "network-images/s": images / batched_s,
            "speedup": loop_s / batched_s,
        },
    ]
    report(
        f"batched_eval_{arch.name}",
        f"Evaluate {args.count} {arch.name} networks on {len(test)} test images",
        rows,
        {"architecture": arch.name, "count": args.count},
    )


if __name__ == "__main__":
    main()
