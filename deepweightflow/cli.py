"""The `dwf` command line. Sub-commands live in their own modules; torch is imported
only inside the commands that need it, so `dwf --help` stays fast."""

import os
from typing import Annotated

import typer

from deepweightflow.generator_cli import evaluate, generator_app
from deepweightflow.service_cli import register as register_service_commands
from deepweightflow.zoo_cli import zoo_app

PLUGINS_VARIABLE = "DWF_ARCHITECTURES"  # read by models.architectures.lookup (kept torch-free here)

app = typer.Typer(help="DeepWeightFlow: generate neural-network weights.", no_args_is_help=True)


@app.callback()
def main(
    architecture_plugin: Annotated[
        list[str] | None,
        typer.Option(
            help="An architecture factory `module:factory` to find architectures in (repeatable); "
            f"adds to {PLUGINS_VARIABLE}, which the workers `dwf serve` starts inherit."
        ),
    ] = None,
) -> None:
    """DeepWeightFlow: generate neural-network weights."""
    if architecture_plugin:
        listed = [p for p in os.environ.get(PLUGINS_VARIABLE, "").split(",") if p.strip()]
        os.environ[PLUGINS_VARIABLE] = ",".join([*listed, *architecture_plugin])


app.add_typer(zoo_app, name="zoo")
app.add_typer(generator_app, name="generator")
app.command("evaluate")(evaluate)
register_service_commands(app)  # dwf serve, dwf worker, dwf generate [--server URL]

if __name__ == "__main__":
    app()
