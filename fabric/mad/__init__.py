"""MAD-level code that SA clients and servers share, sans-IO: RMPP framing and reassembly
(:mod:`fabric.mad.rmpp`) and the SA client's request builders and response parsing
(:mod:`fabric.mad.saclient`, used by IPoIB and ``ibfab saquery``). Nothing here belongs to the
subnet manager: a client imports this package without pulling in the SA server (``fabric.sm.sa``).
"""
