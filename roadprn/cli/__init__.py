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
from roadprn.runtime.signals import raise_keyboard_interrupt, sigterm_as_keyboard_interrupt

log = logging.getLogger("roadprn")


# Commands are imported when used: ``roadprn info`` need not import torch, dask or scipy.
COMMANDS = {
    "info": "roadprn.cli.info:info",
    "synth": "roadprn.cli.synth:synth",
    "extract": "roadprn.cli.extract:extract",
    "batch": "roadprn.cli.batch:batch",
    "merge": "roadprn.cli.merge:merge",
    "vectorize": "roadprn.cli.vectorize:vectorize",
    "evaluate": "roadprn.cli.evaluate:evaluate",
    "export": "roadprn.cli.export:export",
    "train": "roadprn.cli.train:train",
    "config": "roadprn.cli.config:config",
}


#: each command's short help, shown by ``roadprn --help`` without importing the command
COMMAND_HELP = {
    "batch": "Extract roads from every scene in INPUTS (files, folders, globs, lists, STAC "
             "catalogs) into --out.",
    "config": "Show the effective configuration or list every config key.",
    "evaluate": "Score predictions against truths with pixel and road-network metrics.",
    "export": "Export a base model or PRN checkpoint (or 'default') to ONNX or TorchScript.",
    "extract": "Extract roads from SCENE into --out.",
    "info": "Describe a scene (size, bands, dtype, CRS, resolution in metres, nodata, "
            "footprint), a road network (GeoPackage, GeoJSON, FlatGeobuf, GeoParquet:...",
    "merge": "Join the road networks of a batch run's done scenes into one GeoPackage.",
    "synth": "Write OUT.tif, OUT_mask.tif and OUT_roads.gpkg: a synthetic scene with known "
             "roads.",
    "train": "Train models on your own scenes and labels.",
    "vectorize": "Turn a road mask or probability raster into a road network (roads + "
                 "junctions).",
}


class RoadprnGroup(click.Group):
    """Turns user-facing errors into one line on stderr and a documented exit code.

    Subcommands are loaded lazily from :data:`COMMANDS` (inside :meth:`invoke`, so an error or
    Ctrl-C while a command's libraries import is handled like any other).
    """

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """``roadprn --help`` lists the commands from :data:`COMMAND_HELP` without importing
        them (each would load torch, rasterio or matplotlib; a test keeps the texts equal)."""
        rows = [(name, COMMAND_HELP[name]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in COMMANDS:
            import importlib

            module, attr = COMMANDS[cmd_name].split(":")
            command = getattr(importlib.import_module(module), attr)
            self.add_command(command, cmd_name)
        return command

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
        except click.UsageError as exc:
            # one line like every other user error, not click's three-line usage block
            where = exc.ctx.command_path if exc.ctx is not None else "roadprn"
            _fail(f"{exc.format_message().rstrip('.')}; see '{where} --help'", exc.exit_code)
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
    from roadprn.runtime.crashlog import INTERNAL_ERROR_EXIT, internal_error_line, write_crash_log

    path = write_crash_log(exc, context=" ".join(sys.argv))
    if (ctx.obj or {}).get("verbose"):
        log.error("internal error", exc_info=exc)
    click.echo(f"roadprn: {printable_line(internal_error_line(exc, path))}", err=True)
    sys.exit(INTERNAL_ERROR_EXIT)


def printable_line(message: str, limit: int = 1000) -> str:
    """Control characters shown escaped (a file name may hold a newline) and length capped, so
    an error is always one line of readable size. The last guard before printing; reasons are
    made one line where they are caught (``errors.one_line``), this keeps a path's "\\n" visible."""
    text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in message)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fail(message: str, code: int) -> None:
    if _AS_CONSOLE_SCRIPT:
        _ignore_signals_from_now_on()  # the outcome is decided: nothing may change it now
    click.echo(f"roadprn: error: {printable_line(message)}", err=True)
    sys.exit(code)


# Set by :func:`run` (the console script), never in-process (CliRunner, a caller's own program):
# only a process of its own may give up its signal handlers.
_AS_CONSOLE_SCRIPT = False


def _ignore_signals_from_now_on() -> None:
    """SIGINT and SIGTERM ignored for the rest of the process, once its outcome is decided.

    A batch stopped by SIGTERM while its LocalCluster started printed its one line, then died
    by SIGINT (exit -2, not 130; rare, under load): Python's finalisation resets SIGINT to the
    OS default before the process ends, and a SIGINT landing after that kills it. (perf's
    ``signal:signal_generate`` showed batch-run processes sending themselves SIGINT from one
    of their own threads.) Ignored, a late signal changes nothing: the cleanup it would ask
    for is done.
    """
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)


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
    5 model/checkpoint problem, 6 some batch scenes failed, 70 internal error (a bug; the
    line names a log file with the traceback), 130 interrupted.
    """
    configure_logging(verbose, quiet)
    from roadprn.runtime.gdal_messages import quiet_gdal_console
    from roadprn.runtime.settings import configure_process

    quiet_gdal_console(verbose)
    configure_process()  # commands that run a model add torch's threads
    ctx.ensure_object(dict)
    ctx.obj["quiet"] = quiet
    ctx.obj["verbose"] = verbose



def run() -> None:
    """The ``roadprn`` console script: SIGTERM and Ctrl-C are handled from the first moment.

    A signal while the command's libraries are still importing (seconds on a busy machine)
    used to end in a ``KeyboardInterrupt`` traceback or exit -15; now it is the documented
    one line and exit 130 at any time.
    """
    import signal
    import threading

    global _AS_CONSOLE_SCRIPT
    _AS_CONSOLE_SCRIPT = True
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    try:
        # not standalone: click would turn a Ctrl-C while it parses into "Aborted!", exit 1
        code = main(prog_name="roadprn", standalone_mode=False)
    except (KeyboardInterrupt, click.Abort):
        _fail("interrupted; partial outputs were removed", Interrupted.exit_code)
    except click.ClickException as exc:
        _ignore_signals_from_now_on()
        exc.show()
        sys.exit(exc.exit_code)
    # the work is done and published: a signal now must not turn success into a traceback, nor
    # a late one (see _ignore_signals_from_now_on) the exit code into -2
    _ignore_signals_from_now_on()
    sys.exit(code if isinstance(code, int) else 0)
