"""The hot fields of the devices, the device host and the IPoIB context in C structs (the "cores":
``fabric/_corefast.pyx``, ``fabric/host/_localfast.pyx: HostCore``, ``ipoib/_fastctx.pyx``): the
compiled and pure-Python bases declare the same fields, Python code sees them as plain attributes,
the compiled paths read the live values, and a PortInfo answer (packed from a Port's ``__dict__``
with its core fields as overrides) carries them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fabric import wire as w
from fabric.devices import cores
from fabric.devices.hca import HCA, UDQP
from fabric.devices.port import Port, PortCounterSet
from fabric.devices.switch import Switch
from fabric.host import loop
from fabric.wire import smp_attrs as sa
from ipoib import netdev

_corefast = pytest.importorskip("fabric._corefast", reason="extension not built")


def test_the_compiled_cores_declare_the_fields_the_pure_twins_name():
    for name, want in cores.FIELDS.items():
        assert _corefast.fields(getattr(_corefast, name)) == want, name
    from ipoib import _fastctx

    assert _corefast.fields(_fastctx.ContextCore) == netdev.CONTEXT_FIELDS
    if loop._localfast is not None:
        assert _corefast.fields(loop._localfast.HostCore) == loop.HOST_CORE_FIELDS
    from fabric.simproto import endpoint

    if endpoint._simfast is not None:
        assert _corefast.fields(endpoint._simfast.EndpointCore) == endpoint.ENDPOINT_CORE_FIELDS
        assert issubclass(endpoint.SimEndpoint, endpoint._simfast.EndpointCore)


def test_the_classes_derive_from_the_compiled_cores_and_keep_the_fields_out_of_their_dict():
    assert issubclass(Port, _corefast.PortCore) and issubclass(PortCounterSet, _corefast.CountersCore)
    assert issubclass(Switch, _corefast.SwitchCore) and issubclass(HCA, _corefast.HCACore)
    assert issubclass(UDQP, _corefast.QPCore)
    p = Port(3)
    p.lid, p.state = 0x1234, sa.PORT_ACTIVE
    assert (p.lid, p.state, p.num) == (0x1234, sa.PORT_ACTIVE, 3)
    assert "lid" not in p.__dict__ and "guid" in p.__dict__  # the struct holds it; the rest as before
    p.extra = 1  # an instance still takes any other attribute
    assert p.extra == 1


def test_port_info_carries_the_core_fields_through_both_packers():
    p = Port(2, guid=0x11)
    p.set_link(True)
    p.lid, p.lmc = 0x42, 2
    pi = p.port_info()
    assert (pi.lid, pi.lmc, pi.local_port, pi.port_state, pi.phys_state) == (0x42, 2, 2, sa.PORT_INIT,
                                                                              sa.PHYS_LINKUP)
    from fabric.devices.port import PORT_INFO, port_core_fields

    over = port_core_fields(p)
    packed = PORT_INFO.pack(p.__dict__, over)  # the compiled codec, from the dict and the overrides
    assert w.PortInfo.unpack(packed) == pi
    assert w.PortInfo.pack_fields(PORT_INFO.fields(p.__dict__, over)) == packed  # the Python one


def test_the_compiled_send_reads_the_live_port_state():
    """hca_post_segment reads phys and state from the struct: a port taken down from Python makes
    it refuse (PortXmitDiscards), as the Python reference does."""
    from fabric import _wirefast
    from fabric.topology.model import NodeSpec

    hca = HCA(NodeSpec(name="h", kind="hca", num_ports=1, node_guid=0x100, sys_guid=0x100, port_guids={},
                       description="h"))
    port = hca.ports[1]
    port.set_link(True)
    port.state = sa.PORT_ACTIVE
    qp = hca.create_qp(0x1111, 1)
    _wirefast.hca_post_segment(hca, qp.qpn, 1, 3, 30, bytearray(64))
    assert qp.sent == 3 and len(hca.outbox) == 1
    port.state = sa.PORT_DOWN  # from Python: the struct's field
    before = port.counters.pc["port_xmit_discards"]
    _wirefast.hca_post_segment(hca, qp.qpn, 1, 2, 20, bytearray(64))
    assert qp.sent == 3 and len(hca.outbox) == 1
    assert port.counters.pc["port_xmit_discards"] == before + 2


@pytest.mark.parametrize("block", ["fabric._corefast", "ipoib._fastctx"])
def test_without_the_extension_the_pure_bases_serve(block):
    code = (f"import sys; sys.modules[{block!r}] = None\n"
            "from fabric.devices.port import Port\n"
            "from ipoib.netdev import NetdevContext\n"
            "p = Port(1); p.lid = 7\n"
            "print(type(p).__mro__[1].__module__, 'lid' in p.__dict__, NetdevContext.__mro__[1].__module__)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("FABRIC_BACKEND", "IPOIB_BACKEND")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    mod, in_dict, ctx_mod = r.stdout.split()
    if block == "fabric._corefast":
        assert (mod, in_dict) == ("fabric.devices.cores", "True")
    else:
        assert ctx_mod == "ipoib.netdev"
