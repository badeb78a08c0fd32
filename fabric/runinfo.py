"""The run directory of a named fabric: where its sockets, logs and process ids live.

    $IBFAB_RUN_BASE (default /tmp/ibfab-<uid>) / <name> /
        fabric.json      topology, host assignment (written by the launcher)
        topology.net     the topology as an ibsim net file, when it came from a Python object
        host-<i>.pid     written by each device host once its sockets are bound
        host-<i>.log     its stdout and stderr
        s/<guid>         ipc:// ingress socket of each device
        c<i>             ipc:// control socket of host i
        curve.keys       a fabric on several machines (--machines): its CURVE keys, mode 0600
        m<k>/            the run directory of machine k's hosts, when machine k shares this
                         file system (network namespaces); elsewhere the same path on machine k

A host on another machine (``hosts[i]["machine"]``) has tcp:// endpoints, recorded in fabric.json.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import tempfile

IPC_PATH_MAX = 100  # sun_path is 108 octets; keep room for the socket name


def run_base() -> str:
    return os.environ.get("IBFAB_RUN_BASE") or os.path.join(tempfile.gettempdir(), f"ibfab-{os.getuid()}")


def ensure_run_base() -> str:
    """The run base, made private to this user (0700): its sockets take control and link frames,
    so nobody else may reach them. One that another user owns is refused, not used."""
    base = run_base()
    os.makedirs(base, mode=0o700, exist_ok=True)
    st = os.lstat(base)
    import stat

    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise PermissionError(f"{base} is not a directory of this user: remove it or set IBFAB_RUN_BASE")
    if st.st_mode & 0o077:
        os.chmod(base, 0o700)
    return base


NAME_MAX = 32  # the run directory's ipc:// socket paths must stay under the 107 octets AF_UNIX allows
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_name(name) -> str:
    """A fabric's name: letters, digits, '-', '_' and '.', not starting with '.', at most NAME_MAX."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > NAME_MAX:
        shown = name if not isinstance(name, str) or len(name) <= 40 else name[:37] + "..."
        raise ValueError(f"invalid fabric name {shown!r}: use up to {NAME_MAX} letters, digits, '-', '_' "
                         f"or '.', starting with a letter or digit")
    return name


def run_dir_for(name: str) -> str:
    return os.path.join(run_base(), check_name(name))


class RunInfo:
    def __init__(self, run_dir: str, data: dict):
        self.run_dir = run_dir
        self.data = data
        self._keys = None

    @classmethod
    def load(cls, run_dir: str) -> "RunInfo":
        with open(os.path.join(run_dir, "fabric.json")) as f:
            return cls(run_dir, json.load(f))

    def save(self) -> None:
        tmp = os.path.join(self.run_dir, "fabric.json.tmp")
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=1)
        os.replace(tmp, os.path.join(self.run_dir, "fabric.json"))

    @property
    def name(self) -> str:
        return self.data["name"]

    @property
    def topology_path(self) -> str:
        return self.data["topology"]

    def save_topology(self, topology) -> None:
        """``topology.net`` for people and tools, and beside it the same Topology pickled for the
        device hosts: parsing the file was 50 ms of every launch's path at 648 HCAs (a fifth of a
        second at 2,592) where loading the pickle is 6. The pickle names the file's size and
        modification time, so a file changed since is read again instead."""
        with open(self.topology_path, "w") as f:
            f.write(topology.to_net())
        st = os.stat(self.topology_path)
        tmp = self.topology_path + ".pickle.tmp"
        with open(tmp, "wb") as f:
            pickle.dump((st.st_size, st.st_mtime_ns, topology), f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, self.topology_path + ".pickle")

    def load_topology(self):
        """The fabric's Topology: the launcher's pickle when it matches ``topology.net``, else the
        file parsed. The run directory is this user's alone (0700), like the sockets beside it."""
        from .topology import load_topology

        try:
            st = os.stat(self.topology_path)
            with open(self.topology_path + ".pickle", "rb") as f:
                size, mtime_ns, topology = pickle.load(f)
            if (size, mtime_ns) == (st.st_size, st.st_mtime_ns):
                return topology
        except Exception:  # no snapshot, or not one this code reads (whatever unpickling raised): the file is the truth
            pass
        return load_topology(self.topology_path)

    @property
    def hosts(self) -> list:
        return self.data["hosts"]

    def ingress(self, host: int) -> str:
        """The one ingress (PULL) socket of device host ``host``: every link burst to its devices."""
        return self.hosts[host].get("ingress") or f"ipc://{self.run_dir}/s/h{host}"

    def control(self, index: int) -> str:
        ep = self.hosts[index].get("control") if index < len(self.hosts) else None
        if ep is None:
            return f"ipc://{self.run_dir}/c{index}"
        from .curve import register

        register(ep, self.curve_keys())  # every RpcClient made for it speaks CURVE (fabric.curve)
        return ep

    @property
    def machines(self) -> list:
        """The machines of a fabric launched with --machines (fabric.machines); [] when local."""
        return self.data.get("machines") or []

    def remote(self, index: int) -> bool:
        """Host ``index`` runs on a machine of --machines (tcp:// endpoints, started remotely)."""
        return self.hosts[index].get("machine") is not None

    def curve_keys(self):
        """The fabric's CURVE keys (fabric.curve); a fabric with tcp:// endpoints has them, or
        nothing of it may run: there is no plaintext fallback."""
        if self._keys is None:
            from .curve import read_keys

            self._keys = read_keys(self.run_dir)
            if self._keys is None:
                raise PermissionError(f"{self.run_dir}: fabric {self.name!r} has tcp:// endpoints but no CURVE "
                                      f"keys (curve.keys): refusing plaintext")
        return self._keys

    def pid_file(self, index: int) -> str:
        return os.path.join(self.run_dir, f"host-{index}.pid")

    def log_file(self, index: int) -> str:
        return os.path.join(self.run_dir, f"host-{index}.log")

    def mark_ready(self, index: int, pid: int) -> None:
        tmp = self.pid_file(index) + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(pid))
        os.replace(tmp, self.pid_file(index))

    def device_order(self) -> list:
        """Every device, host by host: a link burst names its receiving device by its place here."""
        return [d for h in self.hosts for d in h["devices"]]

    def device_index(self, device: str) -> int:
        try:
            return self.device_order().index(device)
        except ValueError:
            raise KeyError(f"no device {device!r} in fabric {self.name!r}") from None

    def host_of(self, device: str) -> int:
        for i, h in enumerate(self.hosts):
            if device in h["devices"]:
                return i
        raise KeyError(f"no device {device!r} in fabric {self.name!r}")

    def check_paths(self) -> None:
        longest = len(f"{self.run_dir}/s/{0:016x}")  # kept from the per-device sockets: room for names
        if longest > IPC_PATH_MAX:
            raise ValueError(f"run directory {self.run_dir!r} is too long for ipc:// sockets "
                             f"({longest} > {IPC_PATH_MAX}); set IBFAB_RUN_BASE to a shorter path")
