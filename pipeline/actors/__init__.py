"""Ray actors: thin wrappers around the plain stage classes (the only Ray code besides graph.py)."""
