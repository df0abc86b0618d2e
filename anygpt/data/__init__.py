"""Training data: templates, code shards, pretrain and SFT set building, data info, packing, loader, corpus,
synthesis. The module map is in this folder's README.md."""
