"""Throttling of failed authentications per client address, and of their log lines.

Pure bookkeeping (time comes in as ``now``), consulted by the socket shell before it checks a
key. Each address has a bucket of ``burst`` failures that refills at ``per_minute`` failures a
minute. While the bucket is empty the address's authentications are refused with
``rateLimitExceeded`` *without the key being checked*, so guessing keys from one address runs
at ``per_minute`` guesses a minute at most, however many sockets it opens. A correct key is
never counted, and the bucket is not emptied by successes.

Logging is throttled the same way: the first failure of an address is logged at WARNING, the
next ones at most once per ``log_interval`` seconds, with the number of failures not logged in
between (547 wrong keys a second used to make 547 WARNING lines a second).

The table holds at most ``max_addresses`` addresses (least recently failed first out), so an
attacker spreading over many addresses cannot grow it without bound.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["AuthGuard", "Verdict"]


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated_at: float
    logged_at: float | None = None
    unlogged: int = 0


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do about one failed authentication.

    Attributes:
        log: Whether to write a log line for it now.
        unlogged: Failures of this address not logged since the last line (to report in it).
    """

    log: bool
    unlogged: int


class AuthGuard:
    """Failed-authentication throttle for every client address of one server.

    Args:
        burst: Failures an address may have before it is throttled.
        per_minute: Failures a minute an address regains.
        log_interval: Seconds between two log lines about the same address.
        max_addresses: Addresses remembered at most.
    """

    def __init__(
        self,
        *,
        burst: int = 10,
        per_minute: float = 10.0,
        log_interval: float = 60.0,
        max_addresses: int = 4096,
    ) -> None:
        self.burst = burst
        self.rate = per_minute / 60.0
        self.log_interval = log_interval
        self.max_addresses = max_addresses
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def blocked(self, address: str, now: float) -> float:
        """Seconds until ``address`` may try a key again; 0 when it may now."""
        bucket = self._buckets.get(address)
        if bucket is None:
            return 0.0
        self._refill(bucket, now)
        if bucket.tokens >= 1:
            return 0.0
        return (1 - bucket.tokens) / self.rate if self.rate > 0 else float("inf")

    def failed(self, address: str, now: float) -> Verdict:
        """Count one failed authentication (or one refused while throttled) of ``address``."""
        bucket = self._buckets.get(address)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
            self._buckets[address] = bucket
            while len(self._buckets) > self.max_addresses:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(address)
            self._refill(bucket, now)
        bucket.tokens = max(0.0, bucket.tokens - 1)
        if bucket.logged_at is None or now - bucket.logged_at >= self.log_interval:
            unlogged, bucket.unlogged, bucket.logged_at = bucket.unlogged, 0, now
            return Verdict(True, unlogged)
        bucket.unlogged += 1
        return Verdict(False, bucket.unlogged)

    def clear(self) -> None:
        """Forget every address (a server restart)."""
        self._buckets.clear()

    def _refill(self, bucket: _Bucket, now: float) -> None:
        elapsed = max(0.0, now - bucket.updated_at)
        bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate)
        bucket.updated_at = now
