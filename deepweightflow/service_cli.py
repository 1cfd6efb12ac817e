"""`dwf serve`, `dwf worker` and `dwf generate [--server URL]`: the job service from the command line.

`register(app)` adds these commands to a Typer app (the `dwf` CLI); `python -m
deepweightflow.service_cli` runs them on their own.
"""

import json
from pathlib import Path
from typing import Annotated

import typer

from contract.jobs import SEED_MAX
from deepweightflow.client import DEFAULT_URL, Client
from deepweightflow.errors import APIError, DeepWeightFlowError


def serve(
    host: Annotated[
        str | None, typer.Option(help="interface to listen on [default: DWF_HOST or 127.0.0.1]")
    ] = None,
    port: Annotated[int | None, typer.Option(help="port [default: DWF_PORT or 8000]")] = None,
    workers: Annotated[
        int | None, typer.Option(help="worker processes to start [default: 1 embedded, 0 with REDIS_URL]")
    ] = None,
    data_dir: Annotated[Path, typer.Option(help="where the embedded Redis keeps its data")] = Path("var"),
) -> None:
    """Run the API; without REDIS_URL, also an embedded Redis server and a worker (all on this machine)."""
    from service.embedded import serve as run
    from service.settings import get_settings

    overrides = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    run(get_settings().model_copy(update=overrides), workers=workers, data_dir=data_dir)


def worker(
    burst: Annotated[bool, typer.Option(help="quit once the queue is empty")] = False,
) -> None:
    """Run one generation worker on the Redis at REDIS_URL (start as many as you have devices)."""
    from service.settings import get_settings
    from worker.process import run_worker

    run_worker(get_settings(), burst=burst)


def generate(
    architecture: Annotated[str, typer.Argument(help="generator name, e.g. mlp-fashion")],
    count: Annotated[int, typer.Option("--count", "-n", help="networks to generate")] = 10,
    seed: Annotated[int | None, typer.Option(help="random seed [default: chosen and printed]")] = None,
    sampler: Annotated[str | None, typer.Option(help="euler, midpoint or rk4 [default: the card's]")] = None,
    steps: Annotated[int | None, typer.Option(help="ODE steps [default: the card's]")] = None,
    validate: Annotated[
        bool, typer.Option(help="also measure every network on the generator's validation batch")
    ] = False,
    output: Annotated[
        Path, typer.Option("--output", "--out", "-o", help="file or directory for the weights")
    ] = Path("."),
    server: Annotated[
        str | None,
        typer.Option(
            envvar="DWF_SERVER", help=f"API base URL, e.g. {DEFAULT_URL}; without it, generate locally"
        ),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="DWF_API_KEY", help="API key, if the server wants one")
    ] = None,
    generators: Annotated[
        Path | None, typer.Option(help="local generator artifacts [default: the repository's generators/]")
    ] = None,
) -> None:
    """Generate networks into a safetensors file: on a DeepWeightFlow server with --server, else locally
    from the shipped generator artifacts (no server needed)."""
    if server is None:
        generate_here(architecture, count, seed, sampler, steps, output, generators, validate)
        return
    try:
        with Client(server, api_key=api_key) as client:
            job = client.generate(
                architecture, count, seed=seed, sampler=sampler, steps=steps, validate=validate
            )
            typer.echo(f"job {job.id}: {count} x {architecture}, seed {job.seed}", err=True)
            job.wait(progress=True)
            path = job.download(output)
    except DeepWeightFlowError as error:
        typer.echo(f"error: {describe(error)}", err=True)
        raise typer.Exit(1) from error
    accuracy = job.val_accuracy
    summary = {"job": job.id, "path": str(path), "seed": job.seed}
    if accuracy:
        summary |= {"val_accuracy_mean": sum(accuracy) / len(accuracy), "val_accuracy_min": min(accuracy)}
    typer.echo(json.dumps(summary))


def describe(error: DeepWeightFlowError) -> str:
    """One line for the user: an API error's status and problem detail, and when to retry if the
    server said (429, 503); anything else as it reads."""
    if not isinstance(error, APIError):
        return str(error)
    text = f"{error.status}: {error.detail}"
    wait = None if error.retry_after is None else f"{error.retry_after:g} s"
    # (not when the detail says it already: "... retry in 5 s (retry after 5 s)")
    if wait and error.status in (429, 503) and wait not in error.detail:
        text += f" (retry after {wait})"
    return text


def generate_here(
    architecture: str,
    count: int,
    seed: int | None,
    sampler: str | None,
    steps: int | None,
    output: Path,
    generators: Path | None,
    validate: bool = False,
) -> None:
    """Local generation with a progress bar; the file has the same format as a job result."""
    import secrets

    from deepweightflow.generator_cli import DEFAULT_GENERATORS, generate_local
    from deepweightflow.zoo_cli import user_errors

    seed = secrets.randbelow(SEED_MAX + 1) if seed is None else seed
    path = output / f"{architecture}-{count}x-seed{seed}.safetensors" if output.is_dir() else output
    with user_errors():
        if count < 1:
            raise ValueError(f"--count must be at least 1, got {count}")
        generate_local(
            architecture, count, seed, path, generators or DEFAULT_GENERATORS, sampler, steps, validate
        )
    typer.echo(json.dumps({"path": str(path), "seed": seed}))


def register(app: typer.Typer) -> None:
    """Add `serve`, `worker` and `generate` to `app`."""
    app.command()(serve)
    app.command()(worker)
    app.command()(generate)


app = typer.Typer(help=__doc__, no_args_is_help=True)
register(app)

if __name__ == "__main__":
    app()
