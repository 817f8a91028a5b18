"""Console script `abaw`: one subcommand per module, imported only when it runs (fast --help)."""

from __future__ import annotations

import argparse
import importlib
import sys

from abaw_lightning.errors import UserError, print_user_error
from abaw_lightning.quiet import quiet_libraries

COMMANDS = {
    "synth": ("data.synth.synth_command", "write the four datasets in their real formats"),
    "prepare": ("data.ingest.prepare_command", "build the training parts from the real datasets"),
    "demo": ("demo", "synthetic data -> prepare -> the four stages -> a table"),
    "plan": ("store.plan_command", "what abaw-train would train, resume, reuse"),
    "report": ("report.report_command", "mean +/- std over seeds: table and plots"),
    "runs": ("store.runs_command", "the stage store: disk use, dropping caches, pruning runs"),
    "predict": ("inference.predict_command", "test submissions, or CSVs of videos and photos"),
    "export": ("inference.export_command", "the CNN (and GRU) as ONNX or TorchScript, verified"),
}
"""Subcommand -> (module under abaw_lightning defining `add_arguments(parser)` and
`run(args) -> int`, help): each command lives beside the package whose work it runs."""


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """The parser; only the module of the subcommand named in `argv` is imported."""
    parser = argparse.ArgumentParser(prog="abaw", description="abaw-lightning command line")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        if argv[:1] == [name]:
            module = importlib.import_module(f"abaw_lightning.{module_name}")
            module.add_arguments(command)
            command.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    quiet_libraries()
    try:
        return int(args.run(args) or 0)
    except UserError as error:
        print_user_error(error)
        return 2


if __name__ == "__main__":
    sys.exit(main())
