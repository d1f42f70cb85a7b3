"""The commands, registered on :data:`app`, and what the error path needs to know about them."""

from __future__ import annotations

from nucseg_rt.cli import _models, _segment, _watch  # noqa: F401 (registers the commands)
from nucseg_rt.cli._options import app

__all__ = ["app", "flag_names", "tidy_help"]

def _command(group, argv: list[str]):
    """The sub-command ``argv`` runs (None for the top level)."""
    names = getattr(group, "commands", {})
    return next((names[a] for a in argv if a in names), None)


def flag_names(group, argv: list[str]) -> dict[str, str]:
    """Library parameter name -> flag of the command ``argv`` runs (``out_dir`` ->
    ``--out-dir``); arguments by their metavar (``file`` -> ``FILE``)."""
    command = _command(group, argv)
    flags: dict[str, str] = {}
    for param in getattr(command, "params", []):
        if param.param_type_name == "option":
            longs = [o for o in param.opts if o.startswith("--")] or list(param.opts)
            flags[param.name] = max(longs, key=len)
        else:
            flags[param.name] = (param.metavar or param.name).upper().rstrip(".")
    return flags


def tidy_help(group):
    """No Python-style type tags (``<list[Path]>``, ``<bool>``) in help pages: options show their
    declared ``metavar`` (flags none), arguments their name only."""
    for command in [group, *getattr(group, "commands", {}).values()]:
        for param in command.params:
            _plain_metavar(param)
        if hasattr(command, "get_help_option"):
            command.get_help_option = _help_option_without_tag(command.get_help_option)
    return group


def _plain_metavar(param) -> None:
    if param.metavar is None and (getattr(param, "is_flag", False)
                                  or getattr(param, "count", False)):
        param.metavar = ""
    if hasattr(param, "display_type_rich"):  # newer Typers show a type column
        shown = "" if param.param_type_name == "argument" else param.metavar
        if shown is not None:
            param.display_type_rich = lambda ctx, _shown=shown: _shown


def _help_option_without_tag(get_help_option):
    def wrapped(ctx):
        option = get_help_option(ctx)
        if option is not None:
            _plain_metavar(option)
        return option

    return wrapped
