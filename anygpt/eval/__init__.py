"""Evaluation: metrics (``metrics``), held-out manifests (``evalset``), decoding presets and prompt
building on top of inference's generation (``generation``), the music analyser for text→music
(``music_analysis``), the task harness behind ``anygpt eval`` (``harness`` drives ``tasks`` built
from ``steps``, with optional local ``judges``), plots and the demo report (``plots``, ``report``),
and the paper's benchmarks (``benchmarks``)."""
