"""``ibfab`` commands that launch, inspect and stop fabrics: up, down, link, list (status:
:mod:`.status`; capture: :mod:`.capture`)."""

from __future__ import annotations

import sys

from .common import client


def _up_topology(args):
    """The topology ``up`` was given: the positional (file or generator spec), or ``--custom
    FILE --topo NAME[,ARGS]``; None after printing a usage error."""
    from ..topology import TopologyError
    from ..topology.custom import CustomTopoError, load_custom

    if args.custom is None:
        if args.topo is not None:
            print("ibfab up: --topo names a topology of a --custom file", file=sys.stderr)
            return None
        if args.topology is None:
            print("ibfab up: give a topology (file or generator spec) or --custom FILE --topo NAME",
                  file=sys.stderr)
            return None
        return args.topology
    if args.topology is not None:
        print(f"ibfab up: a topology ({args.topology}) and --custom: give one of them", file=sys.stderr)
        return None
    try:
        return load_custom(args.custom, args.topo)
    except (CustomTopoError, TopologyError) as exc:
        print(f"ibfab up: {exc}", file=sys.stderr)
        return None


def cmd_up(args) -> int:
    from .. import launcher, plugins
    from ..topology import TopologyError
    from .progress import reporter

    import shlex

    topology = _up_topology(args)
    if topology is None:
        return 2
    from .machines import load_machines, print_placement

    machines = load_machines(args)
    if machines is False:
        return 2
    sm = "none" if args.no_sm else args.sm
    software = args.node_software or (plugins.NONE if sm == "none" else plugins.DEFAULT)
    config = {d: getattr(args, d) for d in args.node_options if getattr(args, d) is not None}
    progress = reporter(sys.stderr, quiet=args.quiet)
    try:
        try:
            info = launcher.up(topology, args.name, hosts=args.hosts, timeout=args.timeout, sm=sm,
                               sm_args=shlex.split(args.sm_args or ""), node_software=software,
                               node_config=config, progress=progress, machines=machines)
        finally:  # before any error is printed
            if progress is not None:
                progress.close()
    except (TopologyError, launcher.LaunchError, ValueError, OSError) as exc:
        print(f"ibfab up: {exc}", file=sys.stderr)
        return 1
    n = sum(len(h["devices"]) for h in info.hosts)
    print(f"fabric {args.name!r}: {n} devices in {len(info.hosts)} host process{'es' if len(info.hosts) != 1 else ''}, "
          f"every link up in {info.data['links_seconds']:.2f} s")
    up = info.data.get("subnet_up")
    if up and up.get("kind") == "opensm":
        print(f"subnet up in {info.data['up_seconds']:.2f} s from launch: OpenSM reports SUBNET UP "
              f"({up['seconds']:.2f} s after it started; its log: {info.run_dir}/opensm.log)")
    elif up:
        print(f"subnet up in {info.data['up_seconds']:.2f} s from launch (SM sweep {up['seconds']:.2f} s): "
              f"{up['nodes']} nodes, {up['ports_active']} ports Active")
    print_placement(info)
    print(f"node software: {info.data.get('node_software') or plugins.NONE}")
    print(f"run directory: {info.run_dir}")
    return 0


def launcher_sm_kinds():
    from ..launcher import SM_KINDS

    return SM_KINDS


def cmd_down(args) -> int:
    from .. import launcher

    names = launcher.list_fabrics() if args.all else [args.name]
    any_down = False
    for name in names:
        if launcher.down(name):
            print(f"fabric {name!r} stopped")
            any_down = True
        elif not args.all:
            print(f"ibfab down: no fabric named {name!r}", file=sys.stderr)
            return 1
    if args.all and not any_down:
        print("no fabrics running")
    return 0


def cmd_link(args) -> int:
    from ..rpc import RpcError

    with client(args.name) as fc:
        try:
            fc.call(args.device, "link", port=args.port, up=args.state == "up")
        except (RpcError, KeyError) as exc:
            print(f"ibfab link: {exc}", file=sys.stderr)
            return 1
    print(f"{args.device} port {args.port}: link {args.state}")
    return 0


def cmd_list(args) -> int:
    from .. import launcher

    from ..runinfo import RunInfo, run_dir_for

    for name in launcher.list_fabrics():
        if not launcher.is_running(name):
            print(f"{name}\tstale (ibfab down --name {name})")
            continue
        try:
            dead = launcher.dead_hosts(RunInfo.load(run_dir_for(name)))
        except (OSError, ValueError, KeyError):
            dead = []
        if dead:
            print(f"{name}\tdegraded (device host {', '.join(map(str, dead))} dead; ibfab status --name {name})")
        else:
            print(f"{name}\trunning")
    return 0


def cmd_restart_host(args) -> int:
    from .. import launcher

    try:
        info = launcher.restart_host(args.name, args.host, timeout=args.timeout)
    except (launcher.LaunchError, OSError, ValueError) as exc:
        print(f"ibfab restart-host: {exc}", file=sys.stderr)
        return 1
    r = info.data["restarts"][-1]
    print(f"device host {args.host} of {args.name!r} restarted (pid {launcher.host_pid(info, args.host)}): "
          f"{', '.join(info.hosts[args.host]['devices'])}; every link up in {r['links_seconds']:.2f} s")
    return 0


def cmd_kill_host(args) -> int:
    """Fault injection: SIGKILL a device host, as a crash would end it."""
    from .. import launcher

    with client(args.name) as fc:
        info = fc.info
    if not 0 <= args.host < len(info.hosts):
        print(f"ibfab kill-host: fabric {args.name!r} has hosts 0..{len(info.hosts) - 1}", file=sys.stderr)
        return 2
    try:
        pid = launcher.kill_host(info, args.host)
    except launcher.LaunchError as exc:
        print(f"ibfab kill-host: {exc}", file=sys.stderr)
        return 1
    print(f"device host {args.host} (pid {pid}) killed: {', '.join(info.hosts[args.host]['devices'])}")
    return 0


def cmd_sm(args) -> int:
    """The SM of a fabric: where it runs and its state; stop it; start one (on another node)."""
    import json

    from .. import launcher, smctl
    from ..rpc import RpcError

    with client(args.name) as fc:
        info = fc.info
    sm = info.data.get("sm") or {}
    try:
        if args.action == "status":
            st = smctl.sm_status(info)
            others = [x for x in smctl.sm_statuses(info) if st is None or x["node"] != st.get("node")]
            if args.json:
                print(json.dumps({"configured": sm or None, "status": st, "others": others}, indent=1, default=str))
            elif not sm:
                print("no SM configured (ibfab sm start --node N)")
            elif st is None or st.get("state") in (None, "stopped"):
                dead = sm.get("node") and info.host_of(sm["node"]) in launcher.dead_hosts(info)
                print(f"SM on {sm['node']} port {sm['port']}: {'gone with its device host' if dead else 'not running'}")
                return 1
            else:
                up = st.get("subnet_up") or {}
                where = f"{st.get('node', sm['node'])} port {st.get('port', sm['port'])}"
                role = f", {st['sm_state']} (priority {st.get('priority', 0)})" if st.get("sm_state") else ""
                print(f"SM on {where} ({sm.get('kind', 'ours')}{role}): {st.get('state')}, "
                      f"sweeps {st.get('sweeps')}, last SUBNET UP: sweep {up.get('sweep')}, "
                      f"{up.get('nodes')} nodes, {up.get('ports_active')} ports Active")
                for x in others:
                    print(f"SM on {x['node']} port {x['port']} (ours, {x.get('sm_state')} (priority "
                          f"{x.get('priority', 0)})): {x.get('state')}")
            return 0
        if args.action == "stop":
            smctl.stop_sm(info)
            print(f"SM on {sm.get('node')} stopped")
            return 0
        if args.node:
            node = args.node
        elif sm.get("node"):
            node = sm["node"]
        else:
            from ..topology import load_topology

            node = load_topology(info.topology_path).sm_node
        if info.host_of(node) in launcher.dead_hosts(info):  # --node was resolved (fabric.cli._name_nodes)
            print(f"ibfab sm: {node} is on a dead device host (ibfab restart-host first)", file=sys.stderr)
            return 1
        config = dict(sm.get("config") or {}, **({"priority": args.priority} if args.priority is not None else {}))
        if args.standby:
            try:
                st = smctl.start_standby_sm(info, node, args.port, config, timeout=args.timeout)
            except TimeoutError:
                print(f"SM on {node} port {args.port}: not answering")
                return 1
            master = f" (the master is {st['master_guid']:#018x})" if st.get("master_guid") else ""
            print(f"SM on {node} port {args.port}: {st.get('sm_state')}{master}")
            return 0
        up = smctl.restart_sm(info, node, args.port, config, timeout=args.timeout)
        print(f"SM on {node} port {args.port}: SUBNET UP in {up['seconds']:.2f} s")
        return 0
    except (launcher.LaunchError, RpcError, OSError, ValueError) as exc:
        print(f"ibfab sm: {exc}", file=sys.stderr)
        return 1


def register(sub, common) -> None:
    from .. import plugins

    u = common.add("up", cmd_up, "launch a fabric: device hosts, links; returns when every link is up")
    u.add_argument("topology", nargs="?", default=None,
                   help="topology file (ibnetdiscover/ibsim format) or generator spec "
                        "(single:N, linear:N, fattree:LEAVES,SPINES,HCAS_PER_LEAF,LINKS, "
                        "fattree3:PODS,LEAVES,AGGS,HCAS_PER_LEAF,CORES); or --custom")
    u.add_argument("--custom", default=None, metavar="FILE.py",
                   help="a Python file of topologies (Mininet's --custom): topos = {'name': MyTopo}, "
                        "MyTopo a fabric.Topo subclass")
    u.add_argument("--topo", default=None, metavar="NAME[,ARGS]",
                   help="the topology of the --custom file to build, with its arguments (e.g. tree,2,hcas=4)")
    u.add_argument("-q", "--quiet", action="store_true",
                   help="no progress on stderr (hosts started, links trained, SM sweep, LIDs, routes, "
                        "IPoIB joins)")
    u.add_argument("--hosts", type=int, default=None, help="number of device-host processes (default: by size)")
    u.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the links and the subnet")
    u.add_argument("--sm", choices=launcher_sm_kinds(), default="ours",
                   help="the subnet manager: ours (default), opensm (the real OpenSM, through ibsim's protocol; "
                        "Debian opensm and ibsim-utils) or none (ports stay in Init)")
    u.add_argument("--sm-args", default=None, metavar="'ARGS'",
                   help="OpenSM's command-line arguments, e.g. --sm-args '-R updn' (with --sm opensm)")
    u.add_argument("--no-sm", action="store_true", help="the same as --sm none")
    u.add_argument("--node-software", choices=plugins.node_software_names(), default=None,
                   help=f"what runs on the HCAs (default {plugins.DEFAULT}; 'none': bare HCAs, the default "
                        "with --no-sm)")
    u.set_defaults(node_options=common.node_options)

    d = common.add("down", cmd_down, "stop a fabric and remove its run directory (also after a crash)")
    d.add_argument("--all", action="store_true", help="stop every fabric of this user")

    lk = common.add("link", cmd_link, "pull or plug back the cable at a device port")
    lk.add_argument("device", help="the device whose cable end it is (switch or HCA name)")
    lk.add_argument("port", type=int, help="its port number")
    lk.add_argument("state", choices=["up", "down"], help="down: pull the cable (both ends lose the link); "
                                                          "up: plug it back (the link trains again)")

    common.add("list", cmd_list, "named fabrics of this user: running, degraded (a dead device host) or stale",
               named=False)

    rh = common.add("restart-host", cmd_restart_host, "start a dead device host again: same devices, GUIDs, "
                    "cables and (from the SM's cache) LIDs")
    rh.add_argument("host", type=int, help="device-host index (ibfab status names the dead ones)")
    rh.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for its links (default 60)")
    kh = common.add("kill-host", cmd_kill_host, "fault injection: SIGKILL a device host, as a crash would")
    kh.add_argument("host", type=int, help="device-host index (ibfab status shows which devices each runs)")

    sm = common.add("sm", cmd_sm, "the subnet manager: status, stop, or start (on --node)")
    sm.add_argument("action", choices=["status", "stop", "start"],
                    help="status: the SMs and their state; stop: the master SM; start: an SM (--node)")
    sm.add_argument("--node", default=None, help="HCA to run it on (start; default: where it ran)")
    sm.add_argument("--port", type=int, default=1, help="its HCA port (start; default 1)")
    sm.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for SUBNET UP (start)")
    sm.add_argument("--json", action="store_true", help="print the status as JSON (for scripts)")
    sm.add_argument("--standby", action="store_true",
                    help="start: one more SM, next to the running one; it stands by and takes over when the "
                         "master goes (like a second opensm)")
    sm.add_argument("--priority", type=int, choices=range(16), default=None, metavar="0-15",
                    help="start: SM priority (OpenSM's -p); the highest is master when SMs start together")
