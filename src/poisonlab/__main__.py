"""``python -m poisonlab``: the same command line as the ``poisonlab`` script."""

from poisonlab.cli.main import main

if __name__ == "__main__":
    main(prog_name="poisonlab")
