"""InfiniBand wire formats: headers, MADs, attributes, CRCs, whole UD packets.

One declarative field table per header (see :mod:`fabric.wire.fields`); one exception family
(:class:`WireError`, :class:`ParseError`) for everything that cannot be encoded or parsed.
"""

from .crc import icrc32, icrc_bytes, vcrc16, vcrc_bytes  # noqa: F401
from .errors import ParseError, WireError  # noqa: F401
from .fields import FieldMap, Struct  # noqa: F401
from .headers import *  # noqa: F401,F403
from .mad import *  # noqa: F401,F403
from .packet import MAX_PACKET, UDPacket, build_ud_packet, check_vcrc, split_ud_packet  # noqa: F401
from .pma_attrs import *  # noqa: F401,F403
from .sa_attrs import *  # noqa: F401,F403
from .smp_attrs import *  # noqa: F401,F403

from . import _codegen  # noqa: E402

_codegen.write_cache()  # what this import compiled, kept for the next (a no-op once cached)
