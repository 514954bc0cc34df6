"""Helpers shared by every package's command line: the one CLI convention, opening the store, printing JSON.

Package CLIs import this module (never the root :mod:`stormwatch.cli`, which imports them). It imports
nothing of stormwatch above the store layer (the store itself only inside :func:`open_ctx_store`).

The convention every command follows (``tests/test_cli_conventions.py`` checks it on the whole command tree):

* ``-o/--output FILE`` names a file the command writes (:func:`output_option`), ``--out DIR`` a folder
  (:func:`out_dir_option`). No command takes its output path as a positional argument.
* ``--json`` (:func:`json_option`) prints ONE JSON document on stdout, never JSON lines. A list is an object
  ``{"items": [...]}`` plus any summary fields (:func:`json_items`); an empty list prints ``{"items": []}``.
* ``-q/--quiet`` (:func:`quiet_option`), both spellings, on every command that shows progress.
* The same thing has the same option name everywhere (policy files: ``--policies``; the environment variable
  holding the webhook secret: ``--secret-env``).
* An old spelling stays one release as a hidden alias that prints a deprecation warning on stderr and still
  works: :func:`deprecated_alias` (an option), :func:`deprecated_argument` (a positional argument).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson

F = TypeVar("F", bound=Callable[..., Any])

__all__ = [
    "HiddenArgument",
    "deprecated_alias",
    "deprecated_argument",
    "echo_json",
    "json_items",
    "json_option",
    "open_ctx_store",
    "out_dir_option",
    "output_option",
    "quiet_option",
    "warn_deprecated",
]


def echo_json(obj: Any) -> None:
    """Print one JSON document (keys sorted) on stdout."""
    click.echo(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode())


def json_items(items: Iterable[Any], **summary: Any) -> None:
    """Print a list as the one JSON document ``{"items": [...], **summary}`` (``{"items": []}`` when empty)."""
    echo_json({"items": list(items), **summary})


def open_ctx_store(ctx: click.Context) -> Any:
    from stormwatch.store import open_store

    return open_store(ctx.obj.get("db_url") if ctx.obj else None)


# -- the options of the convention -------------------------------------------------------------------------------


def output_option(
    *,
    required: bool = False,
    default: str | None = None,
    allow_dash: bool = False,
    help: str = "File to write.",
    path_type: type[Any] | None = Path,
) -> Callable[[F], F]:
    """``-o/--output FILE``: a file the command writes (``-`` for stdout when ``allow_dash``)."""
    return click.option(
        "-o",
        "--output",
        "output",
        metavar="FILE",
        required=required,
        default=default,
        show_default=default is not None,
        type=click.Path(dir_okay=False, allow_dash=allow_dash, path_type=path_type),
        help=help,
    )


def out_dir_option(
    *, required: bool = False, help: str = "Folder to write into (created if missing)."
) -> Callable[[F], F]:
    """``--out DIR``: a folder the command writes into."""
    return click.option(
        "--out",
        "out",
        metavar="DIR",
        required=required,
        type=click.Path(file_okay=False, path_type=Path),
        help=help,
    )


def json_option(help: str = "Print the result as one JSON document.") -> Callable[[F], F]:
    """``--json``: one JSON document on stdout (a list as ``{"items": [...]}``, see :func:`json_items`)."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def quiet_option(help: str = "No progress output.") -> Callable[[F], F]:
    """``-q/--quiet``: no progress bars or progress lines."""
    return click.option("-q", "--quiet", "quiet", is_flag=True, help=help)


# -- old spellings, kept one release ------------------------------------------------------------------------------


def warn_deprecated(old: str, new: str) -> None:
    """Print the one-line deprecation warning for an old spelling on stderr (as ``stormwatch share`` does)."""
    click.echo(f"warning: {old} is deprecated and goes in the next release; use {new}", err=True)


class HiddenArgument(click.Argument):
    """A positional argument that the usage line and the help do not show (an old spelling)."""

    def get_usage_pieces(self, ctx: click.Context) -> list[str]:
        return []


def _given(value: Any) -> bool:
    return value is not None and value != ()


def _alias(key: str, target: str, old: str, new: str, fn: F) -> F:
    """``fn`` receiving the value of hidden parameter ``key`` as ``target``, with a warning when it is used."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        value = kwargs.pop(key, None)
        if _given(value):
            warn_deprecated(old, new)
            if _given(kwargs.get(target)):
                raise click.UsageError(f"give {new} or the old {old}, not both")
            kwargs[target] = value
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def deprecated_alias(*decls: str, target: str, new: str, **attrs: Any) -> Callable[[F], F]:
    """A hidden option ``decls`` (an old spelling) that fills parameter ``target`` (spelled ``new``) and warns.

    Put it below ``@click.command`` like any option. ``target``'s own default must be None (or ``()`` for a
    ``multiple`` option), so that the alias is used only when the new spelling is not given; giving both is a
    usage error.
    """
    key = f"deprecated_{target}_{decls[-1].lstrip('-').replace('-', '_')}"

    def deco(fn: F) -> F:
        wrapper = _alias(key, target, "/".join(decls), new, fn)
        return click.option(*decls, key, hidden=True, **attrs)(wrapper)

    return deco


def deprecated_argument(old: str, *, target: str, new: str, nargs: int = 1, **attrs: Any) -> Callable[[F], F]:
    """A hidden optional positional argument (an old spelling, shown as ``old`` in the warning) that fills
    ``target`` (spelled ``new``) and warns. ``nargs=-1`` takes any number (``target`` a ``multiple`` option)."""
    key = f"deprecated_{target}_positional"

    def deco(fn: F) -> F:
        wrapper = _alias(key, target, old, new, fn)
        return click.argument(key, nargs=nargs, required=False, cls=HiddenArgument, **attrs)(wrapper)

    return deco
