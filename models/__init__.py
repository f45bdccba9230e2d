"""Model backends (segmenters, embedders, audio detectors) behind small seams; importing is free."""
