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

RUNNING THEM (``test_readme_data_steps_run``, default; ``test_every_readme_command_runs``, slow): the
commands run in README order (README.md, then the folder READMEs) in one sandbox folder that holds
copies of ``train/ tokenizers/ data_pipeline/ inference/`` (a checkout, as a user runs them) and the
user's own inputs the commands name, generated small: ``images.jsonl`` (odd-sized, RGBA and greyscale
pictures), ``convs.jsonl`` (a three-round conversation), ``recipe.yaml``, ``sp.model``,
``path/to/llama-2-7b`` (a small LLaMA-style tokenizer), ``laion-coco-caption.jsonl`` /
``commonvoice.jsonl`` (the reference's format), ``corpus/`` (held-out manifests), ``reply.txt``,
``voice_prompt.wav`` and ``~/data/LibriSpeech`` (``HOME`` is the sandbox, ``~/`` expands to it). ``out/model`` (inference
README) is the export README.md's path made. Each runs through ``bash`` as written, with SMALL's
arguments appended (two training steps of batch 1, one eval item, eight new tokens, no progress
bars); a ``train`` under a launcher or from a folder README writes to ``out_dir=runs/<folder>-<line>`` so it
does not resume another README line's run (README.md's own chain keeps its recipes' out_dir); the
interactive chat gets ``hello`` then ``/quit`` on stdin. A command the README marks
``# not run here: REASON`` (GPUs, 7B weights, a server) is only parsed, as are the ``make`` targets
(NOT_RUN says why). Each must exit 0 (or EXIT's documented status) without a Python traceback.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
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


# ---------------------------------------------------------------- running them
NOT_RUN_MARK = re.compile(r"#.*\bnot run here: (.+)$")
NOT_RUN = {"make demo": "the embedded default itself (17 minutes); tests/test_demo.py runs its --quick form",
           "make test": "the suite this test is part of"}
# appended to a command of this anygpt subcommand (see RUNNING THEM)
SMALL = {"train": ["steps=2", "log.every=1", "checkpoint.every=0", "deepspeed.micro_batch_size=1"],
         "eval": ["--limit", "1", "--preset", "greedy"],
         "chat": ["--set", "max_new_tokens=8"], "tokenize": ["--no-progress"]}
# commands whose documented exit status on the sandbox's model is not 0, and why
EXIT = {"--script inference/example_prompts.jsonl": (1, "its music turn: the path's model has only an image tokenizer; "
                                                     "the turn gets an error and the script goes on (exit 1)")}
BIN = Path(sys.executable).parent


def not_run_reason(readme: str, line: int, cmd: str) -> str | None:
    """Why a command is only parsed: its README's ``# not run here: …`` mark, or NOT_RUN."""
    lines = (REPO / readme).read_text(encoding="utf-8").splitlines()
    end = line
    while lines[end - 1].rstrip().endswith("\\"):  # the mark sits on the command's last line
        end += 1
    m = NOT_RUN_MARK.search(lines[end - 1])
    return m.group(1).strip() if m else NOT_RUN.get(cmd)


def runnable(readme: str, line: int, cmd: str) -> tuple[list[str], str]:
    """``(argv, stdin)`` for the shell: elisions filled, SMALL appended (see RUNNING THEM)."""
    argv = shlex.split(cmd)
    env = []
    while argv and re.match(r"^[A-Z_][A-Z0-9_]*=", argv[0]):
        env.append(argv.pop(0))
    i = next((k for k, a in enumerate(argv) if a in ("anygpt", "anygpt.cli")), None)
    assert i is not None and i + 1 < len(argv), f"{readme}:{line}: {cmd}: not an anygpt command"
    head, sub, rest = argv[:i + 1], argv[i + 1], argv[i + 2:]
    rest = _fill([sub, *rest], f"{readme}:{line}")[1:]
    launched = argv[0] in ("torchrun", "deepspeed")
    if launched:
        head = [a for a in head if a not in ELISIONS]
    extra = list(SMALL.get(sub, []))
    if sub == "chat" and ("--script" in rest or "--single" in rest):
        stdin = ""
    elif sub == "chat":
        stdin = "hello\n/quit\n"
    else:
        stdin = ""
    if sub == "train" and (launched or readme != "README.md"):  # README.md's chain reads its own runs/…/export
        extra.append(f"out_dir=runs/{Path(readme).parent.name or 'top'}-{line}")
    return env + head + [sub, *rest, *extra], stdin


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_sandbox(root: Path, base_tokenizer_dir: Path) -> Path:
    """The folder the README commands run in (see RUNNING THEM)."""
    import json

    from anygpt.vocab import VocabLayout

    for d in ("train", "tokenizers", "data_pipeline", "inference"):
        shutil.copytree(REPO / d, root / d)
    _load(REPO / "tests" / "user_path" / "test_user_path.py", "user_path_data")._write_user_data(root)
    shutil.copytree(base_tokenizer_dir, root / "path" / "to" / "llama-2-7b")
    rounds = [("What is this? <image:pics/sunset.png>", "A sunset."), ("Late?", "Yes."), ("Thanks!", "Hello.")]  # < 256 tokens
    conv = {"id": "three-rounds", "conversation": [[{"role": "user", "message": u}, {"role": "assistant", "message": a}]
                                                   for u, a in rounds]}
    (root / "convs.jsonl").write_text(json.dumps(conv) + "\n")
    (root / "recipe.yaml").write_text("seed: 0\nnum_samples: 16\ndatasets:\n"
                                      "  - {name: pics, shards: codes/image, modality: image, weight: 1, t2x_prob: 0.5, card: tok/image}\n")
    for m in ("image", "speech"):
        (root / "corpus" / m).mkdir(parents=True)
        text = (root / m / "test.jsonl").read_text().replace('"path": "../', '"path": "../../')
        (root / "corpus" / m / "test.jsonl").write_text(text)
    shutil.copy(REPO / "tests" / "data" / "anygpt_pretrain_image.jsonl", root / "laion-coco-caption.jsonl")
    shutil.copy(REPO / "tests" / "data" / "anygpt_pretrain_speech.jsonl", root / "commonvoice.jsonl")
    image = VocabLayout.from_profile("anygpt", 0, {"image": 512, "speech": 0, "music": 0}).modality("image")
    (root / "reply.txt").write_text("Here it is: " + image.start + "".join(image.code_token(i) for i in range(64)) + image.end)
    shutil.copy(root / "voice" / "v0.wav", root / "voice_prompt.wav")
    _load(REPO / "tests" / "benchmark_fixtures.py", "benchmark_fixtures").write_librispeech(root / "data")
    return root


def run_readme(readme: str, line: int, cmd: str, root: Path, in_process: bool = False, timeout: float = 900) -> str:
    """Run one README command in the sandbox; returns its output (stdout + stderr)."""
    argv, stdin = runnable(readme, line, cmd)
    argv = [f"{root}{a[1:]}" if a.startswith("~/") else a for a in argv]  # bash's tilde expansion, HOME = root
    where = f"{readme}:{line}: {shlex.join(argv)}"
    if in_process:
        return _in_process(argv, root, where)
    env = {**os.environ, "HOME": str(root), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    proc = subprocess.run(["bash", "-c", shlex.join(argv)], cwd=root, env=env, input=stdin, capture_output=True,
                          text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    want = next((code for key, (code, _) in EXIT.items() if key in cmd), 0)
    assert proc.returncode == want and "Traceback" not in out, f"{where}: exit {proc.returncode}\n{out[-4000:]}"
    return out


def _in_process(argv: list[str], root: Path, where: str) -> str:
    """``anygpt …`` through ``anygpt.cli.main`` in this process (no interpreter start per command)."""
    import contextlib
    import io

    from anygpt.cli import main

    assert argv[0] == "anygpt", where
    buf, cwd = io.StringIO(), os.getcwd()
    os.chdir(root)
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            try:
                rc = main(argv[1:])
            except SystemExit as e:
                rc = e.code
    finally:
        os.chdir(cwd)
    out = buf.getvalue()
    assert rc in (0, None) and "Traceback" not in out, f"{where}: exit {rc}\n{out[-4000:]}"
    return out


def _subcommand(argv: list[str]) -> str:
    return argv[next(i for i, a in enumerate(argv) if a in ("anygpt", "anygpt.cli")) + 1]


def _to_run(readmes: list[str]) -> list[tuple[str, int, str]]:
    return [(r, n, c) for r, n, c in ALL if r in readmes and not not_run_reason(r, n, c)]


# the path's data steps: the commands a user meets first, and the ones that drift with file formats
DATA_STEPS = {"fit-tokenizer", "tokenize", "vocab", "build-data", "detokenize"}


def test_readme_data_steps_run(tmp_path, base_tokenizer_dir):
    """README.md's data steps, in order, as written, on the user's own small inputs (in this process)."""
    root = make_sandbox(tmp_path, base_tokenizer_dir)
    steps = [(r, n, c) for r, n, c in _to_run(["README.md"]) if c.split()[:1] == ["anygpt"] and c.split()[1] in DATA_STEPS]
    assert [c.split()[1] for _, _, c in steps] == ["fit-tokenizer", "tokenize", "vocab", "build-data", "build-data",
                                                   "build-data", "detokenize"]
    outs = [run_readme(r, n, c, root, in_process=True) for r, n, c in steps]
    assert (root / "grown" / "anygpt_layout.json").exists() and (root / "data" / "sft" / "anygpt_data.json").exists()
    assert "8 items tokenized" in outs[1] and len(list((root / "media").glob("*.png"))) == 8
    # the same build again: its output exists; one line naming it and the fix, not a traceback
    r, n, c = steps[5]
    with pytest.raises(AssertionError, match=r"exit 2\n\s*anygpt build-data: error: data/sft: already exists and is not empty "
                       r"\(pass --overwrite to replace it\)\n\s*\n"):
        run_readme(r, n, c, root, in_process=True)


def test_not_run_commands_say_why():
    skipped = {f"{r}:{n}": not_run_reason(r, n, c) for r, n, c in ALL if not_run_reason(r, n, c)}
    assert any(why.startswith("8 GPUs") for why in skipped.values()) and all(len(why) > 5 for why in skipped.values())
    subs = {_subcommand(runnable(r, n, c)[0]) for r, n, c in _to_run(READMES)}
    # the commands run cover the path through the stack
    assert {"vocab", "tokenize", "build-data", "train", "chat", "eval", "detokenize", "fit-tokenizer"} <= subs


@pytest.mark.slow
def test_every_readme_command_runs(tmp_path, base_tokenizer_dir):
    """Every README command not marked "not run here", in order, through bash, as a user runs it."""
    root = make_sandbox(tmp_path, base_tokenizer_dir)
    for readme in READMES:
        if readme == "inference/README.md":
            (root / "out").mkdir(exist_ok=True)
            (root / "out" / "model").symlink_to(root / "runs" / "sft_tiny" / "export")
        for r, n, c in _to_run([readme]):
            run_readme(r, n, c, root)
    assert (root / "runs" / "sft_tiny" / "export" / "tokenizers" / "image" / "card.yaml").exists()
    assert (root / "out" / "transcript.jsonl").exists() and list((root / "eval").glob("*.json"))
