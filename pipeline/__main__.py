"""``python -m pipeline`` runs the ``eidetic`` command."""

from pipeline.cli import main

main()
