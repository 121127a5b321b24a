"""Write ``configs/default.yaml``: ``roadprn config show`` for the defaults.

The file is generated from the config schema (every key's comment is its field's description),
so it cannot drift from the code; ``tests/unit/test_config_doc.py`` checks that the committed
file equals what this writes. Run it after changing a key, a default or a description:

    python scripts/write_default_config.py          # rewrite configs/default.yaml
    python scripts/write_default_config.py --check  # exit 1 if the file is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from roadprn.cli.config_doc import commented_yaml
from roadprn.config import Config

DEFAULT_YAML = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="only check that the file is up to date (exit 1 if not)")
    args = parser.parse_args(argv)
    text = commented_yaml(Config())
    current = DEFAULT_YAML.read_text(encoding="utf-8") if DEFAULT_YAML.exists() else None
    if args.check:
        if current != text:
            print(f"{DEFAULT_YAML} is out of date: run python scripts/write_default_config.py",
                  file=sys.stderr)
            return 1
        return 0
    if current != text:
        DEFAULT_YAML.write_text(text, encoding="utf-8")
        print(f"wrote {DEFAULT_YAML}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
