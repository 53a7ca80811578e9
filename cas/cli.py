"""What the two commands share on their command line: one-line usage errors, the
log-level choices and ``--version``.

argparse prints its usage block before an error; for a mistyped option that is a
screen of text hiding the one line that matters, so errors here are one line
(``reapi-server: argument --log-level: invalid choice ...``) and exit 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from importlib import metadata
from typing import NoReturn

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class StartupError(Exception):
    """Something outside reapi stops a command from starting (a taken port, a store
    directory another process holds); the message says what, and the command exits 2."""


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def version() -> str:
    try:
        return metadata.version("reapi")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def log_level(value: str) -> str:
    """``--log-level`` accepts any case; the choices are listed when it is none of them."""
    upper = value.upper()
    if upper not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"invalid log level {value!r} (choose from {', '.join(level.lower() for level in LOG_LEVELS)})")
    return upper


def add_common_arguments(parser: argparse.ArgumentParser, default_level: str = "INFO") -> None:
    parser.add_argument("--log-level", type=log_level, default=default_level, metavar="LEVEL",
                        help="debug, info, warning or error (default info)")
    parser.add_argument("--version", action="version", version=f"{parser.prog} {version()}")


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr)
