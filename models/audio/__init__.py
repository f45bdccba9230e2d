"""Audio front-end (YAMNet-framed log-mel) and audio event detectors."""
