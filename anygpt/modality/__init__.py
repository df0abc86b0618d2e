"""Modality tokenizers: the contract and registry (base), backends, flattening, media I/O."""
