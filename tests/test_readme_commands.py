"""Every command in README.md and the folder READMEs parses as written (issue 15: README's
``deepspeed --num_gpus 8 -m anygpt.cli train …`` failed, "unrecognized arguments: -m").

Each ```bash block is extracted; continuation lines are joined, comments and heredoc bodies dropped.
A command is checked with the real parsers it would meet, in this process and without running it
(GPUs, 7B weights and hub downloads are not here):

- ``anygpt …`` / ``python -m anygpt.cli …``: anygpt's own argument parser;
- ``deepspeed …``: DeepSpeed's launcher parser, then anygpt's parser on what it hands ``--module anygpt.cli``;
- ``torchrun …`` / ``python -m torch.distributed.run …``: torch's launcher parser, then anygpt's;
- ``make TARGET``: the target exists in the Makefile; ``train/launch.sh``: the script exists;
- a path into this repository's recipe / card folders (``train/…yaml``, ``tokenizers/…yaml``,
  ``data_pipeline/…``, ``inference/…``) must exist.

SUBSTITUTIONS (explicit): an elision ``…`` / ``...`` in a command stands for "the rest as above":
it is replaced by the arguments of the nearest earlier command of the same anygpt subcommand in
that README (dropped when there is none); shell variables (``$NODE_RANK``) are replaced by ``0``. Commands of
other programs (``cat``, ``pip``, ``git``…) are listed in OTHER_PROGRAMS and not checked.
What a command does once parsed is tested by the area's own tests and by ``tests/user_path``.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
READMES = ["README.md", "train/README.md", "data_pipeline/README.md", "tokenizers/README.md", "inference/README.md"]
OTHER_PROGRAMS = {"cat", "pip", "git", "cd", "export", "ls", "echo", "python", "python3", "bench/run_all", "source",
                  "curl", "open", "mkdir", "espeak-ng", "uv", "nvidia-smi", "tensorboard", ".venv/bin/python"}
REPO_PATH = re.compile(r"^(train|tokenizers|data_pipeline|inference)/[\w./-]+\.(yaml|json|sh|py|jsonl|png|wav)$")


def commands(readme: str) -> list[tuple[str, int, str]]:
    """``(readme, line, command)`` for every command line in the README's bash blocks."""
    out, block, heredoc, pending, start = [], False, None, "", 0
    for i, line in enumerate((REPO / readme).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip().startswith("```"):
            block = line.strip() in ("```bash", "```sh", "```shell")
            continue
        if not block:
            continue
        if heredoc:
            heredoc = None if line.strip() == heredoc else heredoc
            continue
        m = re.search(r"<<-?\s*'?(\w+)'?", line)
        if m:
            heredoc = m.group(1)
            continue
        text = line.split(" #")[0].rstrip() if not line.lstrip().startswith("#") else ""
        if not pending:
            start = i
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        cmd = (pending + text).strip()
        pending = ""
        if cmd:
            out.append((readme, start, cmd))
    return out


ALL = [c for r in READMES if (REPO / r).exists() for c in commands(r)]
ELISIONS = ("…", "...")


def _earlier_args(readme: str, line: int, sub: str) -> list[str]:
    """Arguments of the nearest earlier command ``anygpt SUB …`` (no elision) in ``readme``."""
    for r, n, c in reversed(ALL):
        if r == readme and n < line:
            argv = shlex.split(c)
            if "anygpt" in argv[0] and len(argv) > 1 and argv[1] == sub and not set(argv) & set(ELISIONS):
                return argv[2:]
    return []


def _anygpt(argv: list[str], where: str) -> None:
    from anygpt.cli import build_parser

    argv = _fill(argv, where)
    try:
        build_parser().parse_args(argv)
    except SystemExit as e:
        raise AssertionError(f"{where}: anygpt {' '.join(argv)}: rejected by anygpt's parser") from e


def _fill(argv: list[str], where: str) -> list[str]:
    """The anygpt arguments with an elision replaced by an earlier command's (see SUBSTITUTIONS)."""
    if not set(argv) & set(ELISIONS) or not argv:
        return argv
    readme, _, line = where.rpartition(":")
    earlier = _earlier_args(readme, int(line), argv[0]) if line.isdigit() else []
    out: list[str] = []
    for a in argv:
        out += earlier if a in ELISIONS else [a]
    return out


def check(cmd: str, where: str) -> str:
    """Check one command; returns what it was checked as."""
    argv = shlex.split(re.sub(r"\$\{?\w+\}?", "0", cmd))
    while argv and re.match(r"^[A-Z_][A-Z0-9_]*=", argv[0]):  # VAR=value prefixes
        argv.pop(0)
    argv = [a for a in argv if a != "[--shards" and not a.startswith("image=shards")]  # optional flags shown in brackets
    argv = [a.strip("[]") for a in argv]
    for a in argv:
        if REPO_PATH.match(a):
            assert (REPO / a).exists(), f"{where}: {a} does not exist in the repository"
    prog = argv[0]
    if prog != "anygpt" and not (prog in ("python", "python3") and argv[1:3] == ["-m", "anygpt.cli"]):
        head_end = next((i for i, a in enumerate(argv) if a in ("-m", "--module")), len(argv))
        argv = [a for a in argv[:head_end] if a not in ELISIONS] + argv[head_end:]
    if prog == "anygpt":
        _anygpt(argv[1:], where)
        return "anygpt"
    if prog in ("python", "python3") and argv[1:3] == ["-m", "anygpt.cli"]:
        _anygpt(argv[3:], where)
        return "anygpt"
    if prog == "deepspeed":
        from deepspeed.launcher.runner import parse_args

        try:
            args = parse_args(argv[1:])
        except SystemExit as e:
            raise AssertionError(f"{where}: {cmd}: rejected by the deepspeed launcher") from e
        assert args.module and args.user_script == "anygpt.cli", f"{where}: deepspeed must run --module anygpt.cli"
        _anygpt(args.user_args, where)
        return "deepspeed"
    if prog == "torchrun" or (prog in ("python", "python3") and argv[1:3] == ["-m", "torch.distributed.run"]):
        from torch.distributed.run import get_args_parser

        rest = argv[1:] if prog == "torchrun" else argv[3:]
        try:
            args = get_args_parser().parse_args(rest)
        except SystemExit as e:
            raise AssertionError(f"{where}: {cmd}: rejected by torchrun") from e
        assert args.module and args.training_script == "anygpt.cli", f"{where}: torchrun must run -m anygpt.cli"
        _anygpt(args.training_script_args, where)
        return "torchrun"
    if prog == "make":
        targets = set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), re.M))
        assert set(argv[1:]) <= targets, f"{where}: make {' '.join(argv[1:])}: no such Makefile target"
        return "make"
    if prog in ("train/launch.sh", "./train/launch.sh"):
        assert (REPO / "train" / "launch.sh").exists()
        return "script"
    assert prog in OTHER_PROGRAMS, f"{where}: {prog}: unknown program; check it here or add it to OTHER_PROGRAMS"
    return "other"


def test_readmes_have_commands():
    kinds = [check(c, f"{r}:{n}") for r, n, c in ALL]
    assert kinds.count("anygpt") >= 20 and "deepspeed" in kinds and "torchrun" in kinds and "make" in kinds


@pytest.mark.parametrize("readme,line,cmd", ALL, ids=[f"{r}:{n}" for r, n, _ in ALL])
def test_command_parses_as_written(readme, line, cmd):
    check(cmd, f"{readme}:{line}")


def test_the_old_deepspeed_line_would_have_been_caught():
    with pytest.raises(AssertionError, match="rejected by the deepspeed launcher"):
        check("deepspeed --num_gpus 8 -m anygpt.cli train --config train/pretrain_7b.yaml", "README.md:102")
    with pytest.raises(AssertionError, match="rejected by anygpt's parser"):
        check("anygpt train --konfig train/tiny.yaml", "x")
