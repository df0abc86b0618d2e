"""Batch jobs over many files: tokenize a manifest of media into code shards, detokenize shards or
token strings back into media files. They sit above the data layer (they write code shards), so the
modality backends below them stay free of data-layer imports."""
