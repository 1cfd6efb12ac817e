"""The `dwf` command line. Sub-commands live in their own modules; torch is imported
only inside the commands that need it, so `dwf --help` stays fast."""

import typer

from deepweightflow.generator_cli import evaluate, generator_app
from deepweightflow.service_cli import register as register_service_commands
from deepweightflow.zoo_cli import zoo_app

app = typer.Typer(help="DeepWeightFlow: generate neural-network weights.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")
app.add_typer(generator_app, name="generator")
app.command("evaluate")(evaluate)
register_service_commands(app)  # dwf serve, dwf worker, dwf generate [--server URL]

if __name__ == "__main__":
    app()
