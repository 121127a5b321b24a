"""The ``roadprn`` command line: a thin layer over the library.

Each command lives in a module of its own in this package and is registered on :data:`main`.
Commands parse and check options, call the library, and print; they hold no logic of their own.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from roadprn import __version__
from roadprn.errors import Interrupted, RoadprnError, io_error_line
from roadprn.gdal_messages import quiet_gdal_console
from roadprn.raster import limit_gdal_cache
from roadprn.signals import sigterm_as_keyboard_interrupt

log = logging.getLogger("roadprn")


class RoadprnGroup(click.Group):
    """Turns user-facing errors into one line on stderr and a documented exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with sigterm_as_keyboard_interrupt():
                return super().invoke(ctx)
        except RoadprnError as exc:
            _fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted; partial outputs were removed", Interrupted.exit_code)
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except OSError as exc:
            # Disk full, permission denied and the like: one line, not a traceback.
            if log.isEnabledFor(logging.DEBUG):
                log.exception("I/O error")
            _fail(io_error_line(exc), 1)
        except Exception as exc:  # noqa: BLE001 - the last resort: a bug, reported in one line
            _internal_error(exc, ctx)


def _internal_error(exc: Exception, ctx: click.Context) -> None:
    """A bug: one line naming a log file with the traceback (shown too with ``-v``), exit 70."""
    from roadprn.crashlog import INTERNAL_ERROR_EXIT, internal_error_line, write_crash_log

    path = write_crash_log(exc, context=" ".join(sys.argv))
    if (ctx.obj or {}).get("verbose"):
        log.error("internal error", exc_info=exc)
    click.echo(f"roadprn: {one_line(internal_error_line(exc, path))}", err=True)
    sys.exit(INTERNAL_ERROR_EXIT)


def one_line(message: str, limit: int = 1000) -> str:
    """Control characters shown escaped (a file name may hold a newline) and length capped, so
    an error is always one line of readable size."""
    text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in message)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fail(message: str, code: int) -> None:
    click.echo(f"roadprn: error: {one_line(message)}", err=True)
    sys.exit(code)


def configure_logging(verbose: int, quiet: bool) -> None:
    """Logs go to stderr so that stdout stays clean for machine-readable output."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else
                                           logging.INFO if verbose == 1 else logging.WARNING)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("roadprn")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # Other libraries (rasterio relays every GDAL error as a log record, distributed logs its
    # shutdown) reached stderr through logging's last-resort handler: 15-20 raw libtiff lines
    # before roadprn's one-line error on a full disk. They are shown with -v only.
    libraries = logging.getLogger()
    libraries.handlers[:] = [handler] if verbose else [logging.NullHandler()]
    libraries.setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)


@click.group(cls=RoadprnGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="roadprn")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors; no progress bars.")
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Extract road networks from satellite imagery (tiled segmentation + PatchRefineNet).

    Exit codes: 0 ok, 1 I/O error, 2 bad option or config, 3 bad input, 4 output problem,
    5 model/checkpoint problem, 6 some batch scenes failed, 130 interrupted.
    """
    configure_logging(verbose, quiet)
    quiet_gdal_console(verbose)
    limit_gdal_cache()
    ctx.ensure_object(dict)
    ctx.obj["quiet"] = quiet
    ctx.obj["verbose"] = verbose


def _register() -> None:
    from roadprn.cli import batch, evaluate, extract, info, synth, train, train_prn, vectorize

    train.train.add_command(train_prn.prn)
    main.add_command(info.info)
    main.add_command(synth.synth)
    main.add_command(extract.extract)
    main.add_command(batch.batch)
    main.add_command(vectorize.vectorize)
    main.add_command(evaluate.evaluate)
    main.add_command(train.train)


_register()
