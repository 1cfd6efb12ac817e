"""Scale run: a synthetic zoo of ResNet-18-shaped networks through the whole pipeline, per width.

Networks: the registered `resnet18-cifar` (CIFAR ResNet-18, stages (2, 2, 2, 2)) with its
`base_width` set to each of `--sizes` (64 is the registered 11.2M-parameter network; the
parameter count grows as base_width^2). Zoo: `--members` networks by the recipe of
bench/synthetic_zoo.py (random-init bases, each member a base under a random permutation
plus 1% noise; no training). Stages, each in a fresh single-threaded subprocess that reads
the previous stage's files from `--work-dir` and writes its own:

  zoo        draw the members one by one, write their flat parameters (K, D) float32
  canon      models.canon.canonicalize of the whole zoo onto member 0 (as the shipped zoo
             path calls it), write the aligned (K, D)
  pca-gram   WeightEncoder.fit with svd="gram", K - 1 float16 components, then encode the zoo
  pca-exact  the same with svd="exact" (what "auto" picks for K = 100): measured, not used later
  flow       train_flow on the codes for `--iterations` steps (velocity MLP, hidden 512)
  generate   `--members` codes by RK4 (16 steps), encoder.decode, the stacked state dict
             (buffers from the template, no BatchNorm recalibration: there is no CIFAR data
             here), written as one safetensors file

Each stage reports its wall time (inputs read and outputs written included) and its peak
resident memory (VmHWM of /proc/self/status; the process after imports holds
`baseline GB` of it). The parent stops a stage whose resident memory passes
`--memory-limit-gb`, so that the machine's other jobs never meet the OOM killer; such a
stage is reported as "over limit" with the memory it had reached. Everything under
`--work-dir` is deleted after each size. Writes bench/results/scale_run.json (with a
linear fit of each stage's peak memory in D and the largest D that fits the machine)
and bench/results/scale_run.png (time and memory against parameters, per stage).

Run: python -m bench.scale_run [--members 100] [--sizes 20,32,48,64] [--iterations 300]
"""

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from bench.common import RESULTS_DIR, report
from bench.synthetic_zoo import SyntheticZoo, SyntheticZooRecipe
from models.architectures import ARCHITECTURES, Architecture
from models.canon import canonicalize, spec_for
from models.flow import (
    EncoderConfig,
    FlowTrainConfig,
    VelocityConfig,
    WeightEncoder,
    generate_codes,
    load_velocity,
    save_velocity,
    train_flow,
)
from models.weightspace import WeightLayout

STAGES = ("zoo", "canon", "pca-gram", "pca-exact", "flow", "generate")
GIB = 2**30
REPO_ROOT = Path(__file__).resolve().parents[1]


def architecture_at(width: int) -> Architecture:
    """resnet18-cifar with base_width `width`."""
    registered = ARCHITECTURES["resnet18-cifar"]
    return replace(registered, name=f"resnet18-w{width}", config=replace(registered.config, base_width=width))


def memory_gib(field: str, status: str = "/proc/self/status") -> float:
    """A kB line of a /proc status file (VmRSS, VmHWM, ... or /proc/meminfo's MemTotal) in GiB."""
    for line in Path(status).read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / GIB
    raise KeyError(field)


def read_matrix(path: Path, rows: int) -> torch.Tensor:
    """A raw float32 file -> (rows, D) in memory."""
    return torch.from_numpy(np.fromfile(path, dtype=np.float32).reshape(rows, -1))


class Stages:
    """The pipeline's stages for one width; each reads and writes files in `work`."""

    def __init__(self, width: int, members: int, iterations: int, work: Path):
        self.architecture = architecture_at(width)
        self.members, self.iterations, self.work = members, iterations, work
        module = self.architecture.build()
        self.layout = WeightLayout.from_module(module)
        self.fresh = module.state_dict()  # its buffers (fresh BatchNorm statistics) are every member's

    def stacked(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """(K, D) -> stacked state dict: views of `flat`, buffers (fresh BatchNorm statistics) expanded."""
        params = self.layout.unflatten_stacked(flat)
        return {k: params[k] if k in params else v.expand(len(flat), *v.shape) for k, v in self.fresh.items()}

    def zoo(self) -> dict:
        zoo = SyntheticZoo(self.architecture, SyntheticZooRecipe())
        with open(self.work / "members.f32", "wb") as out:
            for k in range(self.members):
                out.write(self.layout.flatten(zoo.member(k)[0]).numpy().tobytes())
        return {"bases": zoo.recipe.bases, "noise": zoo.recipe.noise}

    def canon(self) -> dict:
        members = read_matrix(self.work / "members.f32", self.members)
        stacked = self.stacked(members)
        template = {k: v[0] for k, v in stacked.items()}
        save_file({k: v.contiguous() for k, v in template.items()}, str(self.work / "template.safetensors"))
        aligned = canonicalize(spec_for(self.architecture), stacked, template)
        before, after = [], []
        with open(self.work / "aligned.f32", "wb") as out:
            for k in range(self.members):
                row = self.layout.flatten({key: v[k] for key, v in aligned.aligned.items()})
                out.write(row.numpy().tobytes())
                if k % SyntheticZooRecipe().bases == 0 and k > 0:  # members of the template's base
                    norm = members[0].norm()
                    before.append(((members[k] - members[0]).norm() / norm).item())
                    after.append(((row - members[0]).norm() / norm).item())
        (self.work / "members.f32").unlink()
        return {"same-base distance before": float(np.median(before)), "after": float(np.median(after))}

    def pca(self, svd: str) -> dict:
        weights = read_matrix(self.work / "aligned.f32", self.members)
        config = EncoderConfig(n_components=self.members - 1, components_dtype="float16", svd=svd)
        encoder = WeightEncoder.fit(weights, self.layout, config)
        codes = encoder.encode(weights)
        error = (encoder.decode(codes[:8]) - weights[:8]).norm() / (weights[:8] - weights.mean(0)).norm()
        if svd == "gram":
            encoder.save(self.work / "encoder.safetensors")
            save_file({"codes": codes}, str(self.work / "codes.safetensors"))
        return {"relative reconstruction error": error.item()}

    def flow(self) -> dict:
        codes = load_file(str(self.work / "codes.safetensors"))["codes"]
        config = FlowTrainConfig(iterations=self.iterations, batch_size=64, warmup=50, device="cpu")
        trained = train_flow(codes, config, VelocityConfig(dim=codes.shape[1], hidden=512, depth=1))
        save_velocity(trained.model, self.work / "flow.safetensors")
        return {"final loss": float(np.mean(trained.history[-20:]))}

    def generate(self) -> dict:
        flow = load_velocity(self.work / "flow.safetensors")
        encoder = WeightEncoder.load(self.work / "encoder.safetensors")
        codes = generate_codes(flow, self.members, encoder.code_dim, seed=0, method="rk4", steps=16)
        params = self.layout.unflatten_stacked(encoder.decode(codes))  # views of one (K, D) matrix
        template = load_file(str(self.work / "template.safetensors"))  # supplies the buffers
        state = {
            k: params[k].contiguous() if k in params else v.expand(len(codes), *v.shape).clone()
            for k, v in template.items()
        }  # as models.generator.NetworkDecoder.assemble
        del params
        path = self.work / "generated.safetensors"
        save_file(state, str(path), metadata={"format": "pt"})
        return {"file GB": path.stat().st_size / 1e9}


def run_stage(stage: str, width: int, members: int, iterations: int, work: Path) -> None:
    """Child process: run one stage and print its measurement as one JSON line."""
    torch.set_num_threads(1)
    stages = Stages(width, members, iterations, work)
    baseline = memory_gib("VmRSS")
    start = time.perf_counter()
    info = stages.pca(stage.removeprefix("pca-")) if stage.startswith("pca-") else getattr(stages, stage)()
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak": memory_gib("VmHWM"), "baseline": baseline, "info": info}))


def watch(command: list[str], limit_gib: float) -> tuple[dict | None, float]:
    """Run a stage's subprocess; stop it once its RSS passes `limit_gib`. (its JSON or None, max RSS seen)."""
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    seen = 0.0
    while child.poll() is None:
        try:
            seen = max(seen, memory_gib("VmRSS", f"/proc/{child.pid}/status"))
        except (OSError, KeyError):  # exited (or a zombie) between poll and read
            break
        if seen > limit_gib:
            child.kill()
        time.sleep(0.1)
    output = child.communicate()[0]
    if child.returncode != 0:
        return None, seen
    return json.loads(output.strip().splitlines()[-1]), seen


def linear_fit(parameters: list[int], values: list[float]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of values against parameters."""
    slope, intercept = np.polyfit(parameters, values, 1)
    return float(intercept), float(slope)


def plot(rows: list[dict], path: Path) -> None:
    """Wall time and peak memory against parameters, one line per stage (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for stage in STAGES:
        done = [r for r in rows if r["stage"] == stage and r["outcome"] == "ok"]
        over = [r for r in rows if r["stage"] == stage and r["outcome"] != "ok"]
        x = [r["parameters M"] for r in done]
        line = axes[0].plot(x, [r["seconds"] for r in done], "o-", label=stage)[0]
        axes[1].plot(x, [r["peak GiB"] for r in done], "o-", color=line.get_color(), label=stage)
        axes[1].plot(
            [r["parameters M"] for r in over],
            [r["peak GiB"] for r in over],
            "x",
            color=line.get_color(),
            markersize=10,
        )
    axes[0].set(xscale="log", yscale="log", xlabel="parameters per network (M)", ylabel="wall time (s)")
    axes[1].set(xscale="log", yscale="log", xlabel="parameters per network (M)", ylabel="peak RSS (GiB)")
    axes[1].set_title("x: stopped at the memory limit", fontsize=9)
    axes[0].legend(fontsize=8)
    figure.suptitle(f"Scale run: {rows[0]['members']} synthetic ResNet-18-shaped networks, 1 CPU thread")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--sizes", default="20,32,48,64", help="base widths (64 = resnet18-cifar, 11.2M)")
    parser.add_argument("--iterations", type=int, default=300, help="flow training steps")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--memory-limit-gb", type=float, default=16.0, help="GiB of RSS a stage may reach")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/scale-run"))
    parser.add_argument(
        "--update", action="store_true", help="keep the rows of the results file this run does not measure"
    )
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)  # child process: one stage
    parser.add_argument("--width", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        run_stage(args.stage, args.width, args.members, args.iterations, args.work_dir)
        return

    rows = []
    for width in map(int, args.sizes.split(",")):
        parameters = WeightLayout.from_module(architecture_at(width).build()).dim
        work = args.work_dir / f"w{width}"
        work.mkdir(parents=True, exist_ok=True)
        try:
            for stage in args.stages.split(","):
                options = (
                    f"--stage {stage} --width {width} --members {args.members} --iterations {args.iterations}"
                )
                command = [sys.executable, "-m", "bench.scale_run", *options.split(), "--work-dir", str(work)]
                result, seen = watch(command, args.memory_limit_gb)
                ok = result is not None
                rows.append(
                    {
                        "width": width,
                        "parameters M": parameters / 1e6,
                        "members": args.members,
                        "stage": stage,
                        "seconds": result["seconds"] if ok else float("nan"),
                        "peak GiB": result["peak"] if ok else seen,
                        "baseline GiB": result["baseline"] if ok else float("nan"),
                        "outcome": "ok"
                        if ok
                        else ("over limit" if seen > args.memory_limit_gb else "failed"),
                        "info": json.dumps(result["info"]) if ok else "",
                    }
                )
                print(rows[-1], flush=True)
                if not ok and stage != "pca-exact":  # the later stages need this one's files
                    break
        finally:
            shutil.rmtree(work, ignore_errors=True)

    previous = RESULTS_DIR / "scale_run.json"
    if args.update and previous.exists():
        measured = {(r["width"], r["stage"]) for r in rows}
        kept = [
            r for r in json.loads(previous.read_text())["rows"] if (r["width"], r["stage"]) not in measured
        ]
        rows = sorted(kept + rows, key=lambda r: (r["width"], STAGES.index(r["stage"])))
    total = memory_gib("MemTotal", "/proc/meminfo")
    fits = {}
    for stage in dict.fromkeys(r["stage"] for r in rows):
        done = [r for r in rows if r["stage"] == stage and r["outcome"] == "ok"]
        if len(done) >= 2:
            intercept, slope = linear_fit([r["parameters M"] for r in done], [r["peak GiB"] for r in done])
            largest = (total - intercept) / slope if slope > 0 else float("inf")
            fits[stage] = {"GiB at 0": intercept, "GiB per M parameters": slope, "largest M in RAM": largest}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    plot(rows, RESULTS_DIR / "scale_run.png")
    report(
        "scale_run",
        f"Scale run: {args.members} synthetic networks per size through the pipeline (1 CPU thread)",
        rows,
        {
            "memory_fits": fits,
            "total_ram_gib": total,
            "iterations": args.iterations,
            "memory_limit_gib": args.memory_limit_gb,
        },
    )
    for stage, fit in fits.items():
        print(
            f"{stage}: peak {fit['GiB at 0']:.2f} + {fit['GiB per M parameters']:.3f} GiB per M parameters;"
            f" {total:.0f} GiB of RAM holds up to {fit['largest M in RAM']:.1f}M parameters"
        )


if __name__ == "__main__":
    main()
