"""Benchmarks (DESIGN.md §4): one command per benchmark; importable for their tests."""
