"""Experiments: TOML configs expanded into grids of cells, run resumably, stored in SQLite."""
