"""The soak, short (make test: about 40 s, one host kill, a dozen cable flaps) or long (``make
soak``: IBFAB_SOAK_S=600, a kill a minute); see tests/soak.py. Exact conservation on every link
between quiet checkpoints, recovery after every kill, and a device host's memory that stays flat."""

import json
import os

import pytest

from fabric import Fabric
from soak import Soak

SECONDS = float(os.environ.get("IBFAB_SOAK_S", "40"))
pytestmark = pytest.mark.timeout(int(SECONDS) + 300)


def test_soak_mixed_traffic_flaps_and_host_kills_conserve_every_packet():
    long_run = SECONDS >= 300
    with Fabric("fattree:2,2,2,1", name="soak", hosts=3) as fab:
        soak = Soak(fab, SECONDS, flap_every=3.0, kill_every=60.0 if long_run else SECONDS / 2,
                    checkpoint_every=15.0 if long_run else 8.0)
        report = soak.run()
    out = os.environ.get("IBFAB_SOAK_REPORT")
    if out:
        with open(out, "w") as f:
            json.dump(report, f, indent=1)
    print(json.dumps({k: v for k, v in report.items() if k != "rss_kb"}, indent=1))
    assert not report["violations"], report["violations"]
    assert report["kills"] >= 1 and len(report["recoveries_s"]) == report["kills"]
    assert report["flaps"] >= SECONDS / 6 and report["checkpoints"] >= 3
    assert report["packets"] > 1000 and report["links_checked"] > 0
    assert report["pings"]["received"] > 0 and report["mcast_joins"] > 0
    if long_run:  # memory: the host that lives through the whole run is flat over its second half
        # (it grows while its allocator's arenas and the IPoIB tables warm up, for a few minutes)
        rss = report["rss_kb"]["0"]
        assert rss[-1] <= rss[len(rss) // 2] * 1.03 + 1024, rss


def test_the_conservation_check_finds_a_lost_packet():
    """The check itself: one packet missing at the far end of a cable, with nothing counted as
    lost, is a violation; counted as lost while the port was down, it is not."""
    soak = Soak.__new__(Soak)
    soak.links = [("sw", 1, "hca", 1)]

    def snap(tx, rx, down=0, pid=1):
        port = lambda xmit, rcv, ingress_down: {1: {  # noqa: E731
            "extended": {"port_xmit_pkts": xmit, "port_rcv_pkts": rcv},
            "lost": {"ingress_down": ingress_down, "link_full": 0, "uncabled": 0}}}
        return {"sw": {"pid": pid, "counters": port(tx, 0, 0)}, "hca": {"pid": 1, "counters": port(0, rx, down)}}

    assert soak.residuals(snap(0, 0), snap(100, 100)) == ({}, 2, 100)
    assert soak.residuals(snap(0, 0), snap(100, 99)) == ({("sw", 1, "hca", 1): 1}, 2, 100)
    assert soak.residuals(snap(0, 0), snap(100, 99, down=1)) == ({}, 2, 100)
    assert soak.residuals(snap(0, 0), snap(100, 50, pid=2)) == ({}, 0, 0)  # a restart: not compared
