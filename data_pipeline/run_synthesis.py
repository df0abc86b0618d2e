"""Run (or resume) the instruction synthesis pipeline: python data_pipeline/run_synthesis.py [RECIPE] --out DIR.

Thin launcher around anygpt.data.synthesis; rerunning with the same --out resumes.
"""

import argparse
import sys
from pathlib import Path

try:
    import anygpt  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anygpt.data.synthesis import STEPS, SynthesisConfig, run_synthesis

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("recipe", nargs="?", default=str(Path(__file__).with_name("synthesis.yaml")))
    p.add_argument("--out", required=True, help="output folder (rerun the same folder to resume)")
    p.add_argument("--until", choices=STEPS, help="stop after this step")
    p.add_argument("--seed", type=int, help="override the recipe's seed")
    a = p.parse_args()
    cfg = SynthesisConfig.load(a.recipe, {"seed": a.seed} if a.seed is not None else None)
    run_synthesis(cfg, a.out, until=a.until)
