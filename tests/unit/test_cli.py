"""The `otrt` command line."""

import re

from typer.testing import CliRunner

import otrt
from otrt.cli import app

runner = CliRunner()


def test_version_prints_the_package_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == otrt.__version__


def test_demo_trains_a_teacher_and_two_students_on_digits():
    result = runner.invoke(app, ["demo", "--epochs", "5", "--labels-per-class", "3"])
    assert result.exit_code == 0, result.stdout
    accuracy = re.search(r"teacher: .* test accuracy (\d+\.\d)%", result.stdout)
    assert accuracy and float(accuracy.group(1)) > 80.0  # digits is easy for the teacher
    assert "30 labels" in result.stdout
    assert re.search(r"ot \(lambda=1\)\s+│\s+\d+\.\d%\s+│\s+\d+\.\d{4}", result.stdout)


def test_bad_options_exit_non_zero_with_a_message():
    result = runner.invoke(app, ["demo", "--epochs", "0"])
    assert result.exit_code != 0
    assert "epochs" in result.output
