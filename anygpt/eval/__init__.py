"""Evaluation: metrics (``metrics``), held-out manifests (``evalset``), generation adapter and
decoding presets (``generation``), media analysis for text→image/music (``image_analysis``,
``music_analysis``), the task harness behind ``anygpt eval`` (``harness``), plots and the demo
report (``plots``, ``report``)."""
