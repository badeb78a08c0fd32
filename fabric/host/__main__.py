"""``python -m fabric.host RUN_DIR HOST_INDEX``: one device-host process, as the launcher starts it.

``python -m fabric.host RUN_DIR --fork I,J,...``: the hosts I, J, ... of one machine, forked from
this process once it has imported the device host and the fabric's node software and read the
topology (a quarter of a second of CPU that four hosts starting at once on two cores would
otherwise each spend). Each child is a device host as above, in a session of its own, writing to
its own log; this process prints ``INDEX PID`` for each as it starts, writes ``host-<i>.exit``
with each one's exit status as it reaps them, and ends with the last.
"""

from __future__ import annotations

import gc
import os
import signal
import sys

from .loop import DeviceHost


def _keep_burst_buffers() -> None:
    """Link bursts are tens of kilobytes, made and freed thousands of times a second. Above its
    default threshold glibc maps each such buffer afresh and unmaps it when freed, which costs a
    page fault per page touched (a tenth of the host's time under a TCP stream); a threshold of
    64 MiB keeps them in the heap, reused."""
    from ..libc import libc

    try:
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        libc.mallopt(M_MMAP_THRESHOLD, 64 << 20)
        libc.mallopt(M_TRIM_THRESHOLD, 128 << 20)
    except (OSError, AttributeError):
        pass  # not glibc: its allocator decides


USAGE = "usage: python -m fabric.host RUN_DIR HOST_INDEX | python -m fabric.host RUN_DIR --fork I,J,..."


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 3 and argv[1] == "--fork":
        try:
            indices = [int(i) for i in argv[2].split(",")]
        except ValueError:
            print(USAGE, file=sys.stderr)
            return 2
        return fork_hosts(argv[0], indices)
    if len(argv) != 2:
        print(USAGE, file=sys.stderr)
        return 2
    try:
        index = int(argv[1])
    except ValueError:
        print(USAGE, file=sys.stderr)
        return 2
    return run_host(argv[0], index)


def fork_hosts(run_dir: str, indices: list[int]) -> int:
    from .. import plugins
    from ..runinfo import RunInfo

    info = RunInfo.load(run_dir)
    topology = info.load_topology()
    plugins.node_software(info.data.get("node_software"), info.data.get("node_software_ref"))  # imported once for all
    children = {}

    def signal_children(signum, _frame=None):
        for pid in list(children):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    try:
        for index in indices:
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                os._exit(_forked_host(info, index, topology))
            children[pid] = index
            print(index, pid, flush=True)
    except BrokenPipeError:  # the launcher is gone: what was started for it must not outlive it
        signal_children(signal.SIGTERM)
    devnull = os.open(os.devnull, os.O_WRONLY)  # the launcher reads the pipe to its end
    os.dup2(devnull, 1)
    os.close(devnull)
    # stopped (ibfab down signals every process of the fabric), the hosts stop too, and this
    # process stays to reap them
    signal.signal(signal.SIGTERM, signal_children)
    signal.signal(signal.SIGINT, signal_children)
    while children:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        index = children.pop(pid, None)
        if index is not None:
            try:
                tmp = os.path.join(run_dir, f"host-{index}.exit.tmp")
                with open(tmp, "w") as f:
                    f.write(str(os.waitstatus_to_exitcode(status)))
                os.replace(tmp, os.path.join(run_dir, f"host-{index}.exit"))
            except OSError:
                pass  # the run directory is gone already: nobody is left to ask
    return 0


def _forked_host(info, index: int, topology) -> int:
    """The child's whole life: never returns into the parent's code (os._exit follows)."""
    code = 1
    try:
        os.setsid()
        _name_thread(f"ibfab-host{index}")
        fd = os.open(info.log_file(index), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        code = run_host(info.run_dir, index, topology)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - whatever it was goes to the log, and the child ends
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
    return code


def _name_thread(name: str) -> None:
    """What top and ps -o comm show for a forked host (its command line is its parent's)."""
    from ..libc import libc

    try:
        PR_SET_NAME = 15
        libc.prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass


def run_host(run_dir: str, index: int, topology=None) -> int:
    def stop(*_):
        raise SystemExit(0)  # interrupts a blocking poll; run() closes the sockets on the way out

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    _keep_burst_buffers()
    host = DeviceHost(run_dir, index, topology)
    # the devices, links and tables built at start live as long as the host: out of the cyclic
    # collector's way, so that a full collection (every few seconds under traffic that allocates)
    # scans what came since, not hundreds of thousands of objects (10-20 ms stalls of the loop)
    gc.freeze()
    host.info.mark_ready(index, os.getpid())
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
            prof.dump_stats(os.path.join(profile, f"host-{index}.prof"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
