"""anygpt: an open training stack for any-to-any multimodal LLMs on discrete tokens."""

__version__ = "0.1.0"
