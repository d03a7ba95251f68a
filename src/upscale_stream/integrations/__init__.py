"""Integrations with other frameworks, each behind its own extra and imported on demand.

* :mod:`upscale_stream.integrations.ray`: Ray Data (``pip install 'upscale-stream[ray]'``).

Importing this package imports none of them.
"""

from __future__ import annotations

__all__: list[str] = []
