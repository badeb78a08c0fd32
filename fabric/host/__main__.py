"""``python -m fabric.host RUN_DIR HOST_INDEX``: one device-host process, as the launcher starts it."""

from __future__ import annotations

import os
import signal
import sys

from .loop import DeviceHost


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m fabric.host RUN_DIR HOST_INDEX", file=sys.stderr)
        return 2

    def stop(*_):
        raise SystemExit(0)  # interrupts a blocking poll; run() closes the sockets on the way out

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
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
