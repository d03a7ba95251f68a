"""The one error of the command line itself: a usage error (exit code 2).

Everything else the CLI reports comes from the library's own tree
(:mod:`upscale_stream.errors`); :class:`UsageError` sits in it too.
"""

from __future__ import annotations

from ..errors import UpscaleError

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "UsageError"]

EXIT_OK = 0
"""Every input succeeded (or was already done)."""
EXIT_FAILED = 1
"""At least one input failed, or the server could not be used."""
EXIT_USAGE = 2
"""The command line is wrong: an unknown flag, a value out of range, no inputs."""
EXIT_INTERRUPTED = 130
"""Stopped by Ctrl-C (128 + SIGINT, the shell convention)."""


class UsageError(UpscaleError):
    """The command line cannot be run as given. The message names the argument at fault.

    Attributes:
        message: What is wrong and what is allowed, for example
            ``--quality 100: must be from 20 to 99``.
    """

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        return self.message
