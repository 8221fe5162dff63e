"""The `otrt` command: the composition root, importing heavy parts inside each command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import otrt

app = typer.Typer(help="otrt: representation transfer by optimal transport.", no_args_is_help=True)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(otrt.__version__)
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """otrt: representation transfer by optimal transport."""


@app.command()
def demo(
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs of the student.")] = 60,
    labels_per_class: Annotated[int, typer.Option(min=1, help="Labeled examples per class.")] = 10,
    weight: Annotated[float, typer.Option(min=0.0, help="lambda, the OT term's weight.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Distil a small MLP from a larger one on scikit-learn's digits, with and without OT."""
    from otrt.demo import run_demo
    from otrt_core.settings import Settings

    run_demo(
        epochs=epochs,
        labels_per_class=labels_per_class,
        weight=weight,
        seed=seed,
        torch_threads=Settings().torch_threads,
    )


@app.command()
def train(
    spec: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Job spec (JSON).")],
    out: Annotated[Path, typer.Option("--out", help="Directory for checkpoints and outputs.")],
    resume: Annotated[bool, typer.Option(help="Continue from the checkpoint in --out.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    datasets_root: Annotated[
        Path | None, typer.Option(help="Where installed datasets are looked up first.")
    ] = None,
) -> None:
    """Train one student from a job spec, without the service."""
    from otrt.train_command import run_train
    from otrt_core.settings import Settings

    settings = Settings()
    code = run_train(
        spec, out, resume, device, datasets_root or settings.datasets_root, settings.torch_threads
    )
    raise typer.Exit(code)
