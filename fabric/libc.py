"""The C library, for the few calls Python's os module lacks (prctl, mallopt, setns).

``dlopen(NULL)``: the interpreter's own symbols, the C library's among them. Not
``ctypes.util.find_library("c")``, which runs ``ldconfig -p`` in a child process and parses its
output: a few milliseconds a call in a small process and more in a device host, twice for every
host a launch forks (hundreds of milliseconds of the start of a 648-HCA fabric, on its two CPUs).
"""

from __future__ import annotations

import ctypes

libc = ctypes.CDLL(None, use_errno=True)
