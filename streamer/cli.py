"""The `emomon` command. Heavy libraries load inside the subcommand that needs them, so
`emomon --help` answers at once."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from model.errors import EmomonError

DEFAULT_CONFIG = Path("config.toml")


def build_parser() -> argparse.ArgumentParser:
    from training.cli import add_parsers as add_training

    parser = argparse.ArgumentParser(
        prog="emomon",
        description="Real-time speech emotion-share monitor (WebRTC VAD, HuBERT, attention regressors).",
    )
    parser.add_argument("--config", type=Path, help="settings file (default: ./config.toml when present)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_training(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="emomon: %(message)s")
    from rich.console import Console

    console = Console(stderr=False)
    try:
        from model.config import load_config

        path = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
        cfg = load_config(path)
        return args.run(args, cfg, console, argv)
    except EmomonError as e:
        print(f"emomon: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("emomon: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
