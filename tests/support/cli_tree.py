"""The espd command line as its argparse parser defines it: commands, show targets and each
command's options. The man page and the bash completion are checked against this."""

from __future__ import annotations

import argparse

from espd.cli.main import _parser


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


def commands() -> dict[str, set[str]]:
    """'run' -> its options; 'show sa' etc. for the show targets; '' -> espd's own."""
    top = _parser()
    out = {"": _options(top)}
    for name, sub in _subcommands(top).items():
        targets = _subcommands(sub)
        if targets:
            for target, leaf in targets.items():
                out[f"{name} {target}"] = _options(leaf)
            out[name] = _options(sub)
        else:
            out[name] = _options(sub)
    return out
