"""The `otrt` command: the composition root, importing heavy parts inside each command."""

from __future__ import annotations

import typer

import otrt

app = typer.Typer(help="otrt: representation transfer by optimal transport.", no_args_is_help=True)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(otrt.__version__)
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """otrt: representation transfer by optimal transport."""


@app.command()
def demo(
    epochs: int = typer.Option(60, min=1, help="Training epochs of the student."),
    labels_per_class: int = typer.Option(10, min=1, help="Labeled examples per class."),
    weight: float = typer.Option(1.0, min=0.0, help="lambda, the OT term's weight."),
    seed: int = typer.Option(0, help="Random seed."),
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
