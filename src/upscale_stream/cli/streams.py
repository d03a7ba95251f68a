"""The three standard streams a command talks through, passed in so tests can replace them."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TextIO

__all__ = ["Streams"]


@dataclass(frozen=True, slots=True)
class Streams:
    """Where a command reads its list input and writes its output.

    Attributes:
        stdin: Read by ``run -`` (a list of inputs).
        stdout: Results: the progress bar on a terminal, the summary, ``--json``.
        stderr: Status lines, plain progress lines, logs and errors.
    """

    stdin: TextIO
    stdout: TextIO
    stderr: TextIO

    @classmethod
    def system(cls) -> Streams:
        """The process's own streams, as they are at the time of the call."""
        return cls(sys.stdin, sys.stdout, sys.stderr)
