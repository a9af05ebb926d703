"""The `mfef` command line."""

from __future__ import annotations

import click

from mfef_keras import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mfef")
def main() -> None:
    """Train, evaluate and ship small image classifiers by online knowledge distillation (MFEF)."""


if __name__ == "__main__":
    main()
