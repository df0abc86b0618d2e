"""Chat demo: run the example prompts against a model, then (optionally) open the web page.

    python inference/chat_demo.py --model out/model               # example prompts -> chat_demo_out/
    python inference/chat_demo.py --model out/model --web         # then serve on http://127.0.0.1:7860

A thin wrapper over `anygpt chat --script` and `anygpt serve`.

"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(1, str(HERE.parent))  # the repository root, when anygpt is not pip-installed

from anygpt.cli import main  # noqa: E402


def demo(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="exported model directory")
    p.add_argument("--out", default="chat_demo_out", help="folder for the transcript and media")
    p.add_argument("--preset", default="demo", help="generation preset (demo, reference, greedy)")
    p.add_argument("--web", action="store_true", help="serve the web page after the scripted turns")
    a = p.parse_args(argv)
    out = Path(a.out)
    code = main(["chat", "--model", a.model, "--preset", a.preset, "--out", str(out / "media"), "--seed", "0",
                 "--script", str(HERE / "example_prompts.jsonl"), "--transcript", str(out / "transcript.jsonl")])
    print(f"transcript: {out / 'transcript.jsonl'}")
    if a.web:
        return main(["serve", "--model", a.model, "--preset", a.preset])
    return code


if __name__ == "__main__":
    sys.exit(demo())
