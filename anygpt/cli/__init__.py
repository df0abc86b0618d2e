"""`anygpt <command>`: one entry point; each command lives in its own module here.

A command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Errors a user can fix (bad file, bad flag) are raised as ``CLIError`` / ``ValueError`` /
``FileNotFoundError`` / ``FileExistsError`` and printed as one line, exit code 2.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

from anygpt.utils import console_logging

# command name -> module under anygpt.cli
COMMANDS = {
    "vocab": "vocab",
    "fit-tokenizer": "fit_tokenizer",
    "tokenize": "tokenize_media",
    "detokenize": "detokenize",
    "build-data": "build_data",
    "train": "train_cmd",
    "chat": "chat",
    "serve": "serve",
    "eval": "eval_cmd",
    "convert": "convert",
    "demo": "demo",
}


class CLIError(Exception):
    """A user-fixable error: printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="anygpt",
        description="Train and run any-to-any multimodal LLMs on discrete tokens.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, modname in COMMANDS.items():
        mod = importlib.import_module(f"anygpt.cli.{modname}")
        sp = sub.add_parser(
            name,
            help=mod.HELP,
            description=(mod.__doc__ or mod.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.add_arguments(sp)
        sp.set_defaults(_run=mod.run)
    return p


def strip_local_rank(argv: list[str]) -> list[str]:
    """The ``deepspeed`` launcher passes ``--local_rank=N`` before the command; keep it as LOCAL_RANK."""
    out, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
        elif a.startswith("--local_rank="):
            os.environ.setdefault("LOCAL_RANK", a.split("=", 1)[1])
        elif a == "--local_rank" and i + 1 < len(argv):
            os.environ.setdefault("LOCAL_RANK", argv[i + 1])
            skip = True
        else:
            out.append(a)
    return out


DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS}  # reported in one line, not a traceback


def one_line_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings as one line a user can act on (``warning: …``), not the Python file, line and
    source text (issue 15: long clips warned with a line of our source code)."""
    return f"warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    warnings.formatwarning = one_line_warning
    console_logging()  # library code logs; the user reads plain lines (rank 0 only for info)
    parser = build_parser()
    args = parser.parse_args(strip_local_rank(sys.argv[1:] if argv is None else argv))
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except (CLIError, ValueError, FileNotFoundError, FileExistsError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"anygpt {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in DISK_ERRORS:
            raise
        # the writers are atomic: nothing half-written was kept, and a rerun goes on where this one stopped
        print(f"anygpt {args.command}: error: {e} (nothing half-written was kept; rerun to continue)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"anygpt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
