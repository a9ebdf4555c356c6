"""Benchmarks: `make bench` (or `python -m bench [NAME ...]`) runs them; results land in bench/results/."""
