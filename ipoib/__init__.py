"""IPoIB over the emulated fabric: the ULP, the rdma_netdev contract and its providers.

The data-path core comes from one of two modules exporting the same names, chosen at import the way
msgpack chooses its extension:

- ``fast``: :mod:`ipoib._fastpath`, compiled from Cython (the default when it is built);
- ``std``: :mod:`ipoib._stdpath`, pure Python (the reference behaviour).

``IPOIB_BACKEND=std|fast`` forces one. Forcing ``fast`` when the extension is missing is an error;
with nothing forced, a missing extension falls back to ``std`` with a warning.
"""

import os as _os
import warnings as _warnings

_forced = _os.environ.get("IPOIB_BACKEND", "").strip().lower()
if _forced not in ("", "std", "fast"):
    raise ImportError(f"IPOIB_BACKEND must be 'std' or 'fast', not {_forced!r}")

if _forced == "std":
    from ._stdpath import *  # noqa: F401,F403
    from . import _stdpath as _core
elif _forced == "fast":
    try:
        from ._fastpath import *  # noqa: F401,F403
        from . import _fastpath as _core
    except ImportError as exc:  # pragma: no cover - depends on the build
        raise ImportError("IPOIB_BACKEND=fast but the Cython extension ipoib._fastpath is not built "
                          "(run `make install`)") from exc
else:
    try:
        from ._fastpath import *  # noqa: F401,F403
        from . import _fastpath as _core
    except ImportError:  # pragma: no cover - depends on the build
        _warnings.warn("ipoib._fastpath is not built; using the pure-Python std backend "
                       "(run `make install` to build it)", RuntimeWarning, stacklevel=2)
        from ._stdpath import *  # noqa: F401,F403
        from . import _stdpath as _core

backend_name = _core.BACKEND
core = _core
