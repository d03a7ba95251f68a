"""The reference server: a local, Runware-compatible upscale WebSocket API that really upscales.

It speaks the protocol of ``docs/protocol.md`` well enough for the official SDKs
and our own client: authentication and session resume, ping/pong, many tasks per frame,
``sync`` and ``async`` delivery with ``getResponse``, de-duplication by ``taskUUID``,
``imageUpload``, and output images served over HTTP on the same port. Fault knobs
(:class:`Faults`) make it misbehave on purpose for tests.

Modules: :mod:`.app` (the server), :mod:`.client_socket` (one socket), :mod:`.refusals` (what
names no task, bounded per frame), :mod:`.auth_guard` (failed-auth throttle), :mod:`.handlers`
(each task type), :mod:`.upscalers` (the model registry), :mod:`.task_work` (accepted tasks'
work), :mod:`.worker` (its worker-thread half), :mod:`.sessions` (sessions, held answers, task
registry, per tenant), :mod:`.image_store` (images), :mod:`.routes` (HTTP), :mod:`.faults`,
:mod:`.config`, :mod:`.imaging` (Pillow pipelines) and :mod:`.outbound` (URL inputs, webhooks,
uploads).
"""

from .app import ReferenceServer
from .config import ServerConfig
from .faults import Faults

__all__ = ["Faults", "ReferenceServer", "ServerConfig"]
