"""The compiled wire helpers (``fabric._wirefast``: the VCRC loop, a switch's burst forwarding),
chosen at import by the rule ``ipoib`` follows for its backend:

| ``FABRIC_BACKEND`` | extension built | result |
|---|---|---|
| unset | yes | the extension |
| unset | no | the pure-Python code, with a ``RuntimeWarning`` |
| ``std`` | any | the pure-Python code |
| ``fast`` | no | ``ImportError``, explaining that ``make install`` builds it |

``wirefast`` is the extension module, or None for the pure-Python code; ``structfast`` (the struct
codec, ``fabric._structfast``) comes with it.
"""

from __future__ import annotations

import os
import warnings

_forced = os.environ.get("FABRIC_BACKEND", "").strip().lower()
if _forced not in ("", "std", "fast"):
    raise ImportError(f"FABRIC_BACKEND must be 'std' or 'fast', not {_forced!r}")

wirefast = None
if _forced != "std":
    try:
        from .. import _wirefast as wirefast  # noqa: F401 (used by the modules that import it from here)
    except ImportError as exc:  # pragma: no cover - depends on the build
        if _forced == "fast":
            raise ImportError("FABRIC_BACKEND=fast but the Cython extension fabric._wirefast is not built "
                              "(run `make install`)") from exc
        warnings.warn("fabric._wirefast is not built; using the pure-Python wire code "
                      "(run `make install` to build it)", RuntimeWarning, stacklevel=2)

structfast = None
if wirefast is not None:
    try:
        from .. import _structfast as structfast  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the build
        raise ImportError("fabric._wirefast is built but fabric._structfast is not (run `make install`)") from exc
