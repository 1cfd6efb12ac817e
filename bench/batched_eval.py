"""Evaluating K networks of one family on its test set: a Python loop over the networks, every
network vmapped into one call, and `batched_evaluate` as the product runs it (vmapped for MLPs;
one network after the other on 250-image slices for convolutions and attention).

Run: python -m bench.batched_eval [--architecture mlp-fashion] [--count 100] [--examples N]
"""

import argparse

import torch

from bench.common import report, timed
from models.architectures import get_architecture
from models.weightspace import batched_evaluate, eval_mode, stack_state_dicts, vmapped_forward
from models.zoo.datasets import load_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--architecture", default="mlp-fashion")
    parser.add_argument("--examples", type=int, default=None, help="the test split's first N images only")
    args = parser.parse_args()

    arch = get_architecture(args.architecture)
    test = load_dataset(arch.dataset).test
    test = type(test)(test.images[: args.examples], test.labels[: args.examples])
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

    def vmapped() -> torch.Tensor:
        with eval_mode(module), torch.no_grad():
            logits = torch.cat(
                [
                    vmapped_forward(module, stacked, test.images[s : s + 1000])
                    for s in range(0, len(test), 1000)
                ],
                dim=1,
            )
        return (logits.argmax(-1) == test.labels).float().mean(1)

    def batched() -> torch.Tensor:
        return batched_evaluate(module, stacked, test.images, test.labels, batch_size=1000)[1]

    images = args.count * len(test)
    methods = {"python loop": loop, "every network vmapped": vmapped, "batched_evaluate": batched}
    timings = {method: timed(run) for method, run in methods.items()}
    loop_s, reference = timings["python loop"]
    for method, (_, accuracy) in timings.items():
        assert torch.allclose(accuracy, reference), f"{method} and the python loop disagree"
    rows = [
        {
            "method": method,
            "seconds": seconds,
            "network-images/s": images / seconds,
            "speedup": loop_s / seconds,
        }
        for method, (seconds, _) in timings.items()
    ]
    report(
        f"batched_eval_{arch.name}",
        f"Evaluate {args.count} {arch.name} networks on {len(test)} test images",
        rows,
        {"architecture": arch.name, "count": args.count},
    )


if __name__ == "__main__":
    main()
