"""The ``upscale-stream`` command: ``run`` (the main job), ``serve`` and ``demo``.

The entry point is :func:`main`; ``python -m upscale_stream.cli`` runs it too.
"""

from .app import main

__all__ = ["main"]
