"""The ``poisonlab`` command-line interface (typer + rich)."""
