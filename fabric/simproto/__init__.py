"""ibsim's client protocol, served by our devices: unmodified OpenSM and infiniband-diags, preloaded
with ``libumad2sim.so``, attach to an HCA port of a running fabric and send and receive real MADs
through it.

- :mod:`.wire`: the datagram layouts (``struct sim_ctl``, ``struct sim_request``);
- :mod:`.endpoint`: the protocol on one port, sans-IO (what the kernel's user MAD layer does);
- :mod:`.server`: its sockets in a device host;
- :mod:`.shim`: finding ``libumad2sim.so`` and the environment a tool needs.
"""
