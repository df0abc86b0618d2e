"""Where a backend's published checkpoint files come from: a local folder, or a hub id.

A card names either ``path`` (a local folder, relative to the card) or ``hub_id`` (+ optional
``subfolder``). Hub downloads happen only when the card names a hub id; with HF_HUB_OFFLINE=1 a
file not in the local cache fails at once with a clear message.
"""

from __future__ import annotations

from pathlib import Path

from anygpt.modality.base import TokenizerCard


def checkpoint_dir(card: TokenizerCard, allow_patterns: list[str] | None = None) -> Path:
    """The folder holding the checkpoint files the card names."""
    local = card.path("path")
    if local is not None:
        if not local.is_dir():
            raise FileNotFoundError(f"{local}: checkpoint folder not found (card {card.root})")
        return local
    hub_id = card.settings.get("hub_id")
    if not hub_id:
        return card.root  # files named directly in the card, relative to it
    from huggingface_hub import snapshot_download

    sub = card.settings.get("subfolder")
    patterns = allow_patterns and [f"{sub}/{p}" if sub else p for p in allow_patterns]
    try:
        root = Path(snapshot_download(str(hub_id), revision=card.settings.get("revision"), allow_patterns=patterns))
    except Exception as e:  # offline, missing repo, no network
        raise FileNotFoundError(f"card {card.root}: cannot get {hub_id} ({type(e).__name__}: {e}); "
                                "download it once with network or set 'path' to a local copy") from None
    return root / sub if sub else root


def required_file(folder: Path, name: str, card: TokenizerCard) -> Path:
    """``folder/name`` (or an absolute path), which must exist."""
    p = Path(name)
    p = p if p.is_absolute() else folder / p
    if not p.exists():
        raise FileNotFoundError(f"{p}: checkpoint file not found (card {card.root})")
    return p
