"""Every example a command's --help teaches is one the command accepts: its options exist and take its values."""

from __future__ import annotations

import shlex

import click
import pytest
from click.testing import CliRunner

from mfef_keras.cli import main


def _commands(group: click.Group, path: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))


def _examples(path: tuple[str, ...]) -> list[list[str]]:
    """The command lines under "Examples:" in ``mfef PATH --help``, continuation lines joined."""
    text = CliRunner().invoke(main, [*path, "--help"], terminal_width=200).output
    if "Examples:" not in text:
        return []
    block = text.split("Examples:")[1].split("\n\n")[0].replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]


EXAMPLES = [(path, example) for path, _ in _commands(main) for example in _examples(path)]


def test_the_commands_teach_examples():
    assert {path for path, _ in EXAMPLES} >= {("train",), ("study",)}


@pytest.mark.parametrize(("path", "example"), EXAMPLES, ids=[" ".join(e[1:4]) for _, e in EXAMPLES])
def test_a_help_example_is_one_mfef_command_its_command_accepts(path, example):
    assert example[: 1 + len(path)] == ["mfef", *path], "an example runs into the next one, or names another command"
    assert example.count("mfef") == 1
    command = main
    context = main.make_context("mfef", list(path), resilient_parsing=True)
    for name in path:
        command = command.get_command(context, name)
    command.make_context(" ".join(["mfef", *path]), example[1 + len(path) :], parent=context)
