"""DeepSpeed training: typed config, the loop, checkpoints, metrics, launchers.

``run(load_config("train/tiny.yaml", ["steps=20"]))`` trains in this process and returns the export
dir; ``launch("train/tiny.yaml", ["steps=20"], nproc=2)`` runs the same under torchrun.
"""

from anygpt.train.config import TrainConfig, load_config
from anygpt.train.launch import launch
from anygpt.train.loop import run

__all__ = ["TrainConfig", "load_config", "launch", "run"]
