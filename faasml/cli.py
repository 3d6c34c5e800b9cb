"""The ``faasml`` command line: what is installed, and which plugins provide it.

Each subcommand is a pair: ``_add_<command>(subparsers)`` declares its arguments and
``_cmd_<command>(args) -> int`` runs it; :data:`_COMMANDS` maps the name to the runner. Adding a
subcommand means writing that pair and one line in :func:`_build_parser` and :data:`_COMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from faasml.errors import FaaSMLError
from faasml.hooks.types import BackendKind, BackendRecord

__all__ = ["main"]

PROG = "faasml"

#: the order kinds are listed in: compute first, then what it needs.
KINDS: tuple[BackendKind, ...] = ("function", "storage", "pubsub")

_MAIN_EPILOG = """\
examples:
  faasml providers               every backend, whether it is installed, how to install it
  faasml providers --json        the same as JSON, for scripts
  faasml plugins                 the plugins that registered them, with versions and hooks
  faasml doctor                  probe the configured function, store and PubSub for real
  faasml train sparse-lr --data flights --workers 2 --plot loss.png
                                 train on the embedded local provider, print held-out metrics
  faasml deploy --provider aws --option role=arn:aws:iam::123456789012:role/faasml
                                 create or update the Lambda function tasks run in
  python -m faasml --version     also works where the console script is not on PATH

Run 'faasml <command> --help' for the options of one command.
"""

_PROVIDERS_EPILOG = """\
columns:
  NAME               what to pass to faasml.connect(...) / storage=... / pubsub=...
  KIND               function (a FaaS platform), storage (an ObjectStore) or pubsub
  INSTALLED          whether its Python dependencies can be imported here
  EXTRA TO INSTALL   the exact command that installs them, when they are missing
  PLUGIN             the plugin that registered the backend (faasml.* are built in)

examples:
  faasml providers
  faasml providers --kind storage
  faasml providers --json | jq '.[] | select(.installed | not) | .install'

A backend missing from the list comes from a plugin that is not installed, failed to import
(a warning names it), or is disabled by FAASML_PLUGINS / FAASML_DISABLED_PLUGINS.
"""

_PLUGINS_EPILOG = """\
examples:
  faasml plugins
  faasml plugins --json

environment:
  FAASML_PLUGINS=a,b                 load only these third-party plugins (entry-point names)
  FAASML_DISABLED_PLUGINS=a,b        never load these (built-in module names work too)
  FAASML_DISABLE_PLUGIN_AUTOLOAD=1   load no third-party plugin at all
  FAASML_STRICT_PLUGINS=1            a plugin that fails to import is an error, not a warning

Third-party plugins are pip packages with an entry point in the 'faasml' group; see
docs/plugins.md for how to write one.
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``faasml`` command line.

    :param argv: the arguments after the program name; ``None`` reads ``sys.argv``.
    :returns: the exit status: 0 on success, 2 on a usage error or a faasml error (printed as
        ``faasml: error: <message>``), 1 when stdout was closed before the output was written.
    """
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        # argparse exits on --help, --version and usage errors; callers of main() (tests, the
        # console script) expect a status code, not an exception.
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        status = _COMMANDS[args.command](args)
        # A closed pipe would otherwise surface at interpreter exit, outside this handler.
        sys.stdout.flush()
        return status
    except FaaSMLError as exc:
        # faasml errors are written for users (they name the fix); a traceback would bury that.
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `faasml providers | head` closed our stdout early; point stdout at devnull so the
        # interpreter's final flush does not raise a second time on the way out.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the hand-formatted epilogs and gives subcommand names room next to their help."""

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 32,
        width: int | None = None,
    ) -> None:
        super().__init__(prog, indent_increment, max_help_position, width)
        # argparse sizes the name column from the options only and forgets the indented
        # subcommand names, which then wrap onto their own line; reserve room for them.
        self._action_max_length = 16


def _build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with one subparser per entry of :data:`_COMMANDS`."""
    from faasml import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run the same code on any FaaS platform.\n\n"
        "This command inspects the installation (which backends exist, are installed and\n"
        "answer), trains models with serverless workers, and deploys the function cloud\n"
        "providers run tasks in.",
        epilog=_MAIN_EPILOG,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    _add_providers(subparsers)
    _add_plugins(subparsers)
    _add_doctor(subparsers)
    _add_train(subparsers)
    _add_deploy(subparsers)
    return parser


# --------------------------------------------------------------------------- providers


def _add_providers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "providers",
        help="list every backend of every kind and how to install it",
        description="List every registered backend of every kind (Function providers,\n"
        "ObjectStores and PubSubs), whether its dependencies are installed, and the command\n"
        "that installs them.",
        epilog=_PROVIDERS_EPILOG,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    parser.add_argument(
        "--kind", choices=KINDS, help="list only backends of this kind (default: all kinds)"
    )


def _cmd_providers(args: argparse.Namespace) -> int:
    kinds = (args.kind,) if args.kind else KINDS
    rows = [_backend_row(record) for kind in kinds for record in _backends(kind)]
    if args.json:
        _print_json(rows)
        return 0
    _print_table(
        ["NAME", "KIND", "INSTALLED", "EXTRA TO INSTALL", "PLUGIN", "DESCRIPTION"],
        [
            [
                row["name"],
                row["kind"],
                "yes" if row["installed"] else "no",
                row["install"] or "-",
                row["plugin"],
                row["description"],
            ]
            for row in rows
        ],
    )
    return 0


def _backends(kind: BackendKind) -> list[BackendRecord]:
    from faasml import registry

    return list(registry.backends(kind).values())


def _backend_row(record: BackendRecord) -> dict[str, Any]:
    installed = record.installed
    cls = record.cls
    return {
        "name": record.name,
        "kind": record.kind,
        "installed": installed,
        "extra": record.extra,
        # Only a missing backend needs a command; an installed one showing one would suggest
        # something is still to do.
        "install": None if installed else (record.install_hint or None),
        "plugin": record.plugin,
        "description": record.description,
        "class": cls if isinstance(cls, str) else f"{cls.__module__}:{cls.__qualname__}",
    }


# --------------------------------------------------------------------------- plugins


def _add_plugins(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "plugins",
        help="list the plugins with their versions and hooks",
        description="List the plugins registered with faasml (built-in and third-party), the\n"
        "version of the distribution that ships each one, and the hooks it implements.",
        epilog=_PLUGINS_EPILOG,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")


@dataclass(frozen=True)
class _Dist:
    name: str
    version: str


def _cmd_plugins(args: argparse.Namespace) -> int:
    from faasml.hooks.manager import DEFAULT_PLUGINS, get_plugin_manager

    pm = get_plugin_manager()
    dists = _entry_point_distributions()
    builtin = _faasml_distribution()
    rows: list[dict[str, Any]] = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda item: item[0]):
        if plugin is None:  # a blocked name: pluggy keeps it as a placeholder
            continue
        dist = builtin if name in DEFAULT_PLUGINS else dists.get(name)
        rows.append(
            {
                "name": name,
                "builtin": name in DEFAULT_PLUGINS,
                "distribution": dist.name if dist else None,
                "version": dist.version if dist else None,
                "hooks": sorted(caller.name for caller in pm.get_hookcallers(plugin) or []),
            }
        )
    if args.json:
        _print_json(rows)
        return 0
    _print_table(
        ["NAME", "DISTRIBUTION", "VERSION", "HOOKS"],
        [
            [
                row["name"],
                row["distribution"] or "-",
                row["version"] or "-",
                ", ".join(row["hooks"]),
            ]
            for row in rows
        ],
    )
    return 0


def _entry_point_distributions() -> dict[str, _Dist]:
    """Map entry-point name -> the distribution that declares it, for third-party plugins."""
    from faasml.hooks.manager import ENTRY_POINT_GROUP

    found: dict[str, _Dist] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)  # None for entry points not read from an installed dist
        if dist is not None:
            found[ep.name] = _Dist(dist.metadata["Name"], dist.version)
    return found


def _faasml_distribution() -> _Dist:
    try:
        return _Dist("faasml", importlib.metadata.version("faasml"))
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        from faasml import __version__

        return _Dist("faasml", __version__)


# --------------------------------------------------------------------------- output helpers


def _print_json(rows: list[dict[str, Any]]) -> None:
    json.dump(rows, sys.stdout, indent=2)
    sys.stdout.write("\n")


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    """Print left-aligned columns separated by two spaces; the last column is not padded."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    for line in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(line[:-1], widths, strict=False)]
        sys.stdout.write("  ".join([*cells, line[-1]]).rstrip() + "\n")


# --------------------------------------------------------------------------- doctor


def _add_doctor(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="check the configuration and that each chosen backend answers",
        description="Read the configuration, connect, and probe each backend for real: a\n"
        "put/get/delete on the object store, a publish/receive on the PubSub, and one task\n"
        "through the function provider. Exit code 1 if any check fails.",
        epilog="examples:\n  faasml doctor\n  faasml doctor --provider local --storage redis "
        "--pubsub nats\n  FAASML_REDIS_URL=redis://10.0.0.5:6379/0 faasml doctor --storage redis",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--provider", help="function provider to check (default: configured)")
    parser.add_argument("--storage", help="object store to check (default: provider's default)")
    parser.add_argument("--pubsub", help="PubSub to check (default: provider's default)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds for the probe task")


def _cmd_doctor(args: argparse.Namespace) -> int:
    from faasml.doctor import run_checks

    checks = run_checks(args.provider, args.storage, args.pubsub, timeout=args.timeout)
    _print_table(
        ["CHECK", "RESULT", "DETAIL"],
        [[c.name, "ok" if c.ok else "FAIL", c.detail] for c in checks],
    )
    return 0 if all(c.ok for c in checks) else 1


# --------------------------------------------------------------------------- train


def _add_train(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from faasml.train_command import add_parser

    add_parser(subparsers, _HelpFormatter)


def _cmd_train(args: argparse.Namespace) -> int:
    from faasml.train_command import run

    return run(args)


# --------------------------------------------------------------------------- deploy


def _add_deploy(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from faasml.deploy_command import add_parser

    add_parser(subparsers, _HelpFormatter)


def _cmd_deploy(args: argparse.Namespace) -> int:
    from faasml.deploy_command import run

    return run(args)


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "deploy": _cmd_deploy,
    "doctor": _cmd_doctor,
    "plugins": _cmd_plugins,
    "providers": _cmd_providers,
    "train": _cmd_train,
}
