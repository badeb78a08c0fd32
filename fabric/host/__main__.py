"""``python -m fabric.host RUN_DIR HOST_INDEX``: one device-host process, as the launcher starts it."""

from __future__ import annotations

import os
import signal
import sys

from .loop import DeviceHost


def _keep_burst_buffers() -> None:
    """Link bursts are tens of kilobytes, made and freed thousands of times a second. Above its
    default threshold glibc maps each such buffer afresh and unmaps it when freed, which costs a
    page fault per page touched (a tenth of the host's time under a TCP stream); a threshold of
    64 MiB keeps them in the heap, reused."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        libc.mallopt(M_MMAP_THRESHOLD, 64 << 20)
        libc.mallopt(M_TRIM_THRESHOLD, 128 << 20)
    except (OSError, AttributeError):
        pass  # not glibc: its allocator decides


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m fabric.host RUN_DIR HOST_INDEX", file=sys.stderr)
        return 2

    def stop(*_):
        raise SystemExit(0)  # interrupts a blocking poll; run() closes the sockets on the way out

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    _keep_burst_buffers()
    host = DeviceHost(argv[0], int(argv[1]))
    host.info.mark_ready(int(argv[1]), os.getpid())
    profile = os.environ.get("IBFAB_PROFILE")  # a directory: write host-<i>.prof (cProfile) there
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    try:
        host.run()
    finally:
        host.close()
        if prof is not None:
            prof.disable()
            prof.dump_stats(os.path.join(profile, f"host-{argv[1]}.prof"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
