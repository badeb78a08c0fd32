"""What a command-line client opened in a device host (a live capture, IPoIB's perf sinks and
senders, its pings), released when the client stops asking about it for LEASE_S: it was killed,
or lost its terminal. A UDP port is then never left bound, a sender never runs on for nobody, a
capture never streams into nothing. An agent of a device, so it fires from the host loop's
timers like any other deadline."""

from __future__ import annotations

import os

# a client that has not asked about what it opened for this long is gone (IBFAB_LEASE_S: the tests)
LEASE_S = float(os.environ.get("IBFAB_LEASE_S", "10"))


class Lease:
    def __init__(self, device, release, now: float):
        self.device, self._release = device, release
        self.expires = now + LEASE_S
        self.released = False
        device.agents.append(self)

    def renew(self, now: float) -> None:
        self.expires = now + LEASE_S

    def next_deadline(self):
        return None if self.released else self.expires

    def tick(self, now: float) -> None:
        if now >= self.expires:
            self.release()

    def release(self) -> None:
        if not self.released:
            self.cancel()
            self._release()

    def cancel(self) -> None:
        """Stop watching, without releasing: the owner freed what the lease guarded itself."""
        if not self.released:
            self.released = True
            if self in self.device.agents:
                self.device.agents.remove(self)
