"""``python -m upscale_stream.cli``: the same as the ``upscale-stream`` command."""

from .app import main

raise SystemExit(main())
