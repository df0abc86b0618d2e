"""The package's layer order (pyproject's import-linter contract, docs/layers.md) holds, and the
check fails, naming the import, when a module imports an upper layer."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# the layers media I/O may use once it lives inside modality/ (a layers contract cannot put a
# subpackage below its parent, so this one rule is checked here with grimp, the linter's graph)
BELOW_MODALITY = ("anygpt.utils", "anygpt.config", "anygpt.vocab", "anygpt.weights", "anygpt.modality.media")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on the ``anygpt`` package under ``root`` with the repository's contract."""
    env = {**os.environ, "PYTHONPATH": str(root)}  # root's anygpt, not the installed one
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-c", code, "--no-cache", "--no-logo", str(REPO / "pyproject.toml")],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)


def test_the_package_keeps_its_layers():
    proc = lint_imports(REPO)
    assert proc.returncode == 0, "an import crosses the layer order (pyproject [tool.importlinter]):\n" + proc.stdout + proc.stderr
    assert "anygpt layers KEPT" in proc.stdout


def test_an_upward_import_breaks_the_check_and_is_named(tmp_path):
    shutil.copytree(REPO / "anygpt", tmp_path / "anygpt", ignore=shutil.ignore_patterns("__pycache__"))
    vocab = tmp_path / "anygpt" / "vocab" / "layout.py"
    # a function-level import: hidden from a reader of the module's top, seen by the check
    vocab.write_text(vocab.read_text() + "\n\ndef _upward():\n    from anygpt.train import loop  # noqa: F401\n")
    proc = lint_imports(tmp_path)
    assert proc.returncode != 0
    assert "anygpt layers BROKEN" in proc.stdout
    assert "anygpt.vocab is not allowed to import anygpt.train" in proc.stdout
    assert "anygpt.vocab.layout -> anygpt.train.loop" in proc.stdout


def test_media_io_imports_nothing_above_it():
    grimp = pytest.importorskip("grimp")
    sys.path.insert(0, str(REPO))  # build the graph of this checkout's anygpt
    try:
        graph = grimp.build_graph("anygpt", cache_dir=None)
    finally:
        sys.path.remove(str(REPO))
    media = "anygpt.modality.media"
    assert media in graph.modules, f"no media I/O module {media} in the graph"
    above = sorted(m for m in graph.find_upstream_modules(media, as_package=True)
                   if not m.startswith(BELOW_MODALITY) and m not in ("anygpt", media))
    assert not above, f"{media} imports an upper layer: {above}"
