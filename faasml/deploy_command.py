"""``faasml deploy``: create or update the platform function a cloud provider invokes.

The function runs faasml's runtime behind the provider's handler shim and holds the signing
secret the driver uses, so that it accepts the driver's tasks and nobody else's. The command
builds the provider's backend from the same configuration layers as :func:`faasml.connect`
(``--option`` over ``FAASML_<PROVIDER>_<OPTION>`` over ``config.toml``) and calls its
:meth:`~faasml.interfaces.Function.deploy`.
"""

from __future__ import annotations

import argparse
import json
import typing
from typing import Any

from faasml.errors import ConfigurationError

__all__ = ["add_parser", "parse_assignments", "run"]

_EPILOG = """\
The signing secret:
  The driver signs every task; the function refuses tasks it cannot verify. Both sides read
  the secret from FAASML_SECRET (or 'secret' in config.toml):
    export FAASML_SECRET=$(python -c "import secrets; print(secrets.token_hex(32))")
    faasml deploy --provider aws --option role=arn:aws:iam::123456789012:role/faasml
  and the driver, in the same environment: faasml.connect("aws")

examples:
  faasml deploy --provider aws --option role=arn:aws:iam::123456789012:role/faasml \\
      --option region=eu-west-1 --option memory_mb=3008
  faasml deploy --provider openwhisk --option api_host=https://whisk.example.org
  faasml deploy --provider openfaas --option image=registry.example.org/faasml:1 \\
      --option gateway=http://gateway.openfaas:8080
  faasml deploy --provider openfaas --build-context build/   then docker build, push
  faasml deploy --provider aliyun --no-dependencies     the platform provides numpy/scipy

Options are the provider's constructor options ('faasml providers' lists the providers;
docs/backends.md their options); values are read as JSON when they parse as JSON
(numbers, true/false, lists), else as text.
"""


def add_parser(subparsers: Any, formatter: type[argparse.HelpFormatter]) -> None:
    """Add the ``deploy`` subcommand."""
    parser = subparsers.add_parser(
        "deploy",
        help="create or update the function a cloud provider runs tasks in",
        description="Package faasml (and, by default, its dependencies for the platform's\n"
        "Linux and Python), then create or update the provider's function with the signing\n"
        "secret from FAASML_SECRET. Running it again updates the function in place.",
        epilog=_EPILOG,
        formatter_class=formatter,
    )
    parser.add_argument(
        "--provider", required=True, help="the function provider: aws, aliyun, huawei, ..."
    )
    parser.add_argument(
        "--option",
        "-o",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a provider option, e.g. region=eu-west-1 (repeatable)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for the function (repeatable)",
    )
    parser.add_argument(
        "--build-context",
        metavar="DIR",
        help="image platforms (openfaas, openfunction): write the Docker build context of the "
        "function image into DIR instead of deploying; build and push it, then deploy with "
        "--option image=...",
    )
    parser.add_argument(
        "--python",
        metavar="X.Y",
        help="with --build-context: the image's Python (default 3.11); match the driver's, "
        "since tasks travel as cloudpickle",
    )
    parser.add_argument(
        "--no-dependencies",
        action="store_true",
        help="do not bundle numpy, scipy ... (the platform provides them: a layer, an image)",
    )


def parse_assignments(items: list[str], what: str, as_json: bool) -> dict[str, Any]:
    """``["k=v", ...]`` as a dict; values decoded as JSON where they parse (``as_json``).

    :raises ConfigurationError: an item has no ``=`` or an empty name.
    """
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigurationError(f"{what} {item!r} must look like NAME=VALUE")
        value: Any = raw
        if as_json:
            try:
                value = json.loads(raw)
            except ValueError:
                value = raw
        parsed[key] = value
    return parsed


def _fit_types(cls: type, options: dict[str, Any]) -> dict[str, Any]:
    """Turn JSON-decoded values back into text where the option takes only text."""
    try:
        hints = typing.get_type_hints(cls.__init__)  # type: ignore[misc]
    except Exception:  # unresolvable annotations in a third-party backend: keep the values
        return options
    fitted = dict(options)
    for key, value in options.items():
        hint = hints.get(key)
        if hint is str and not isinstance(value, str):
            fitted[key] = json.dumps(value)
    return fitted


def run(args: argparse.Namespace) -> int:
    """Deploy; print one line on success."""
    from faasml.config import CloudConfig, backend_options, resolve_secret
    from faasml.registry import backend_class

    cls = backend_class("function", args.provider)
    if not getattr(cls, "deployable", False):
        raise ConfigurationError(
            f"the {args.provider} provider runs functions itself; there is nothing to deploy "
            "(faasml deploy is for cloud providers: 'faasml providers' lists them)"
        )
    if args.build_context:
        writer = getattr(cls, "write_build_context", None)
        if writer is None:
            raise ConfigurationError(
                f"the {args.provider} provider deploys a zip, not an image: run faasml deploy "
                "without --build-context"
            )
        extra = {} if args.python is None else {"python_version": args.python}
        try:
            path = writer(args.build_context, **extra)
        except ValueError as exc:
            raise ConfigurationError(f"--python {args.python!r}: {exc}") from None
        print(
            f"wrote the {args.provider} image build context to {path}; build and push it "
            f"(docker build -t IMAGE {path}), then: faasml deploy --provider {args.provider} "
            "--option image=IMAGE"
        )
        return 0
    secret = resolve_secret(CloudConfig.load({}).secret)
    if not secret:
        raise ConfigurationError(
            "faasml deploy needs the signing secret the driver will use: export FAASML_SECRET "
            '(e.g. $(python -c "import secrets; print(secrets.token_hex(32))")) here and '
            "where the driver runs, or set 'secret' in config.toml"
        )
    options = _fit_types(cls, parse_assignments(args.option, "--option", as_json=True))
    environment = parse_assignments(args.env, "--env", as_json=False)
    backend = cls(**backend_options(args.provider, cls, options))
    try:
        line = backend.deploy(
            secret=secret, environment=environment, dependencies=not args.no_dependencies
        )
    finally:
        backend.close()
    print(line)
    return 0
