"""Segmenter backends: classical (default, weight-free); SAM-HQ comes with a checkpoint."""
