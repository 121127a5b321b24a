"""``python -m roadprn`` is the same as the ``roadprn`` command."""

from roadprn.cli import main

if __name__ == "__main__":
    main(prog_name="roadprn")
