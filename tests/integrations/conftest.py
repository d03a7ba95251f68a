"""One loopback-only Ray instance for the whole session, with the test key in its environment.

``ray.init`` costs 4-9 s and ~700 MiB here, so it runs once per session, not per test. The
key reaches the actors the only way upscale-stream allows: ``RUNWARE_API_KEY`` is in the
environment when ``ray.init()`` starts the node, and every worker inherits it. It is removed
from the driver's environment again right after, so no test can pass because the driver had
it. ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` makes Ray 2.60 listen on 127.0.0.1 only
(``_node_ip_address`` alone does not); :func:`non_loopback_listeners` checks it.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from upscale_stream.config import ENV_API_KEY
from upscale_stream.testing import TEST_API_KEY

_RAY_ENV = {
    ENV_API_KEY: TEST_API_KEY,
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def non_loopback_listeners() -> list[str]:
    """Sockets that this process or any of its descendants (Ray's processes) listen on
    beyond loopback, as ``name pid ip:port``."""
    me = psutil.Process()
    found = []
    for process in [me, *me.children(recursive=True)]:
        try:
            connections = process.net_connections(kind="inet")
            name = process.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        for conn in connections:
            if conn.status == psutil.CONN_LISTEN and not _is_loopback(conn.laddr.ip):
                found.append(f"{name} {process.pid} {conn.laddr.ip}:{conn.laddr.port}")
    return found


def _is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.partition("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1, as Ray's gRPC servers bind
    return address.is_loopback


@pytest.fixture(scope="session")
def ray_session() -> Iterator[Any]:
    """Ray, started once on 2 CPUs, loopback only, no dashboard."""
    saved = {name: os.environ.get(name) for name in _RAY_ENV}
    os.environ.update(_RAY_ENV)
    import ray
    from ray._private import ray_constants

    # Read when ray is first imported: make sure it holds even if something imported ray early.
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            configure_logging=False,
        )
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    ray.data.DataContext.get_current().enable_progress_bars = False
    for name in ("ray", "ray.data"):  # their DEBUG lines are pages of metrics per test
        logging.getLogger(name).setLevel(logging.INFO)
    try:
        yield ray
    finally:
        ray.shutdown()
