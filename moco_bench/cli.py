"""The ``moco-bench`` command line.

Each subcommand lives beside the code it drives, in a module with ``register(subparsers)`` that adds its
parser and sets ``func(args) -> int``. A :class:`MocoBenchError` is printed as one line (it already names
the file and what was expected) and exits with status 2; so is an OS error (a full disk, a read-only folder),
with the path and the cause. Ctrl-C prints one line and exits 130; SIGTERM (a scheduler's time limit, ``kill``)
unwinds the same way and exits 143, so that a half-written temporary file is removed rather than left behind.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import List, Optional, Sequence

from moco_bench import __version__, demo, gpucheck
from moco_bench.convert import cli as convert_cli
from moco_bench.core.errors import MocoBenchError, describe
from moco_bench.engine import cli as engine_cli
from moco_bench.engine import data_cli
from moco_bench.pretrain import cli as pretrain_cli
from moco_bench.results import cli as results_cli

COMMANDS = (data_cli, convert_cli, pretrain_cli, engine_cli, results_cli, demo, gpucheck)  # in --help's order


class Terminated(BaseException):
    """SIGTERM arrived: unwind like Ctrl-C (``finally`` blocks run, temporaries are removed)."""


def handle_sigterm() -> None:
    """Turn SIGTERM into :class:`Terminated` in this process. Processes forked from it (DataLoader workers) keep
    the default action: the handler re-sends the signal to them with it restored."""
    if threading.current_thread() is not threading.main_thread():
        return
    owner = os.getpid()

    def on_term(signum, frame):
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Terminated()

    signal.signal(signal.SIGTERM, on_term)


def build_parser(commands: Sequence = COMMANDS) -> argparse.ArgumentParser:
    """The parser with every command module's subcommands (``commands``: each has ``register(subparsers)``)."""
    parser = argparse.ArgumentParser(
        prog="moco-bench", description="Pretrain MoCo, convert SSL checkpoints, run the standard transfer protocols.")
    parser.add_argument("--version", action="version", version=f"moco-bench {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in commands:
        module.register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    # Overrides (key=value) may follow options, as in `eval CKPT --config X key=value`; argparse would have
    # bound the positional list before the options, so leftovers of that form are appended to it.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any("=" not in e or e.startswith("-") for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides or []) + extra
    stamp = "" if sys.stderr.isatty() else "%(asctime)s "  # a log file, CI or nohup: when each line was written
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format=f"{stamp}%(levelname)s %(message)s", datefmt="%Y-%m-%d %H:%M:%S")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # it logs each SIMD build it tries at INFO
    handle_sigterm()
    try:
        return int(args.func(args) or 0)
    except MocoBenchError as e:
        print(f"moco-bench: error: {describe(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a read-only folder, a permission: the path and the cause, no traceback
        where = f"{e.filename}: " if e.filename else ""
        print(f"moco-bench: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Terminated) as e:
        what = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        print(f"moco-bench: {what}; finished results and checkpoints are kept, and a rerun resumes", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
