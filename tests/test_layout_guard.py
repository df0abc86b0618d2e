"""The repo's top-level folders must never shadow installed libraries (HF `tokenizers` above all)."""

import subprocess
import sys
import sysconfig

import pytest

FOLDERS = ["tokenizers", "data_pipeline", "train", "inference"]


def test_folders_are_not_packages(repo_root):
    for d in FOLDERS:
        assert (repo_root / d).is_dir(), f"{d}/ is missing"
        assert not (repo_root / d / "__init__.py").exists(), f"{d}/__init__.py would shadow a library"


def _shadowable_names() -> set[str]:
    import importlib.metadata as md

    names = set(sys.stdlib_module_names)
    for dist in md.distributions():
        top = dist.read_text("top_level.txt")
        if top:
            names.update(t.strip() for t in top.split())
        names.add(dist.metadata["Name"].lower().replace("-", "_"))
    return {n for n in names if n and not n.startswith("_")}


def test_no_file_named_after_a_dependency_or_stdlib(repo_root):
    bad = _shadowable_names()
    offenders = []
    for d in FOLDERS + ["bench"]:
        for f in (repo_root / d).rglob("*"):
            if f.suffix == ".py" or f.is_dir():
                if f.stem.lower() in bad:
                    offenders.append(str(f.relative_to(repo_root)))
    assert not offenders, f"these names shadow a library or stdlib module: {offenders}"


@pytest.mark.parametrize(
    "cmd",
    [
        [sys.executable, "-c", "import transformers, tokenizers; from tokenizers import Tokenizer; print(tokenizers.__file__)"],
        [sys.executable, "-m", "pytest", "--version"],
    ],
)
def test_repo_root_gets_hf_tokenizers(repo_root, cmd, child_env):
    probe = [sys.executable, "-c", "import tokenizers; from tokenizers import Tokenizer; print(tokenizers.__file__)"]
    out = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, env=child_env(), timeout=300)
    assert out.returncode == 0, out.stderr
    got = subprocess.run(probe, cwd=repo_root, capture_output=True, text=True, env=child_env(), timeout=300)
    assert sysconfig.get_paths()["purelib"] in got.stdout or "site-packages" in got.stdout, got.stdout


def test_cli_module_gets_hf_tokenizers(repo_root, child_env):
    code = "import runpy, sys; sys.argv=['anygpt','--help']; import tokenizers; print('TOK', tokenizers.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, env=child_env())
    assert "site-packages" in out.stdout
    out = subprocess.run([sys.executable, "-m", "anygpt.cli", "--help"], cwd=repo_root, capture_output=True, text=True, env=child_env())
    assert out.returncode in (0, 2) and "vocab" in out.stdout, out.stderr


def test_pyproject_packages_only_anygpt(repo_root):
    import tomllib

    cfg = tomllib.loads((repo_root / "pyproject.toml").read_text())
    assert cfg["tool"]["setuptools"]["packages"]["find"]["include"] == ["anygpt*"]
    assert "--import-mode=importlib" in cfg["tool"]["pytest"]["ini_options"]["addopts"]


def test_readme_is_a_front_door_not_a_dump(repo_root):
    # a broken edit once repeated one README section 1,100 times (11 MB); the front door must stay readable
    text = (repo_root / "README.md").read_text()
    assert len(text) < 60_000, f"README.md is {len(text)} characters"
    paragraphs = [p for p in text.split("\n\n") if len(p) > 200]
    assert len(paragraphs) == len(set(paragraphs)), "README.md repeats a paragraph"
    assert "make test" in text and "make demo" in text
