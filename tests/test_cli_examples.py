"""Every `mfef` command that --help or the README teaches is one the command accepts: its subcommand and options
exist and take the values given (types, choices, counts). Parsing only: nothing is trained or read."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from mfef_keras.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"
SHELL_OPERATORS = {"&&", "||", "|", ";", "&", "(", ")", ">", ">>", "<"}


def _commands(group: click.Group, path: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))


def _mfef_commands(shell: str) -> list[list[str]]:
    """The arguments of each `mfef` (or `.venv/bin/mfef`) command in ``shell``, continuation lines joined."""
    found = []
    for line in shell.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split, lexer.commenters = True, "#"
        command: list[str] = []
        for token in [*lexer, ";"]:
            if token not in SHELL_OPERATORS:
                command.append(token)
                continue
            if command and Path(command[0]).name == "mfef":
                found.append(command[1:])
            command = []
    return found


def _help_examples() -> list[tuple[tuple[str, ...], list[str]]]:
    examples = []
    for path, _ in _commands(main):
        text = CliRunner().invoke(main, [*path, "--help"], terminal_width=200).output
        if "Examples:" in text:
            block = text.split("Examples:")[1].split("\n\n")[0]
            examples += [(path, arguments) for arguments in _mfef_commands(block)]
    return examples


HELP_EXAMPLES = _help_examples()
README_COMMANDS = [
    arguments
    for block in re.findall(r"```bash\n(.+?)```", README.read_text(), re.S)
    for arguments in _mfef_commands(block)
    if not any("$" in argument for argument in arguments)  # a loop's variables: not a command as written
]


def _parse(arguments: list[str]) -> None:
    """Parse ``mfef ARGUMENTS`` down to its (sub)command's options, as click would before running it."""
    context = main.make_context("mfef", list(arguments), resilient_parsing=True)
    command, rest = main, list(arguments)
    while isinstance(command, click.Group):
        assert rest and not rest[0].startswith("-"), f"no subcommand in mfef {shlex.join(arguments)}"
        name = rest.pop(0)
        command = command.get_command(context, name)
        assert command is not None, f"no command {name!r} in mfef {shlex.join(arguments)}"
        if isinstance(command, click.Group):
            context = command.make_context(name, list(rest), parent=context, resilient_parsing=True)
    command.make_context(command.name, rest, parent=context)


def _parse_where_its_paths_exist(arguments: list[str], folder: Path) -> None:
    """`_parse`, with the files and folders the command reads (made by earlier steps or the user's own) made
    empty in ``folder``, the working directory: click checks that they exist while parsing."""
    for _ in range(len(arguments)):
        try:
            return _parse(arguments)
        except click.BadParameter as error:
            missing = re.search(r"(?:Path|Directory|File) '([^']+)' does not exist", error.format_message())
            if not missing:
                raise
            path = folder / missing.group(1)
            if path.suffix:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
            else:
                path.mkdir(parents=True)
    raise AssertionError(f"mfef {shlex.join(arguments)} still misses a path")


def test_the_commands_and_the_readme_teach_examples():
    assert {path for path, _ in HELP_EXAMPLES} >= {("train",), ("study",)}
    assert {arguments[0] for arguments in README_COMMANDS} >= {"train", "eval", "study", "zoo", "export", "predict"}


@pytest.mark.parametrize(("path", "arguments"), HELP_EXAMPLES, ids=[" ".join(a[:3]) for _, a in HELP_EXAMPLES])
def test_a_help_example_is_a_command_its_command_accepts(path, arguments):
    assert arguments[: len(path)] == list(path), "an example of another command"
    _parse(arguments)


@pytest.mark.parametrize("arguments", README_COMMANDS, ids=[" ".join(a[:3]) for a in README_COMMANDS])
def test_a_readme_command_is_one_mfef_accepts(arguments, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _parse_where_its_paths_exist(arguments, tmp_path)
