"""`python -m otrt`: the same as the `otrt` command (the service starts trainers this way)."""

from otrt.cli import app

app(prog_name="otrt")
