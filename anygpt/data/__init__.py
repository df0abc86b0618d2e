"""Training data: templates, instruction pools, code shards, sequence building, packing, loader, corpus."""
