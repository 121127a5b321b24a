"""``python -m roadprn`` is the same as the ``roadprn`` command."""

from roadprn.cli import run

if __name__ == "__main__":
    run()
