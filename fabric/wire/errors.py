"""The one exception family of the wire layer."""


class WireError(ValueError):
    """A value cannot be encoded (out of range, wrong type or size)."""


class ParseError(WireError):
    """Received octets are not a valid packet or MAD; the message says why.

    Every parser in the project raises this (never IndexError or struct.error), so a receive path
    can count the drop by ``reason`` and go on.
    """

    def __init__(self, reason: str, *, kind: str = "malformed"):
        super().__init__(reason)
        self.reason = reason
        self.kind = kind  # short class for counters: truncated, pktlen, lnh, icrc, vcrc, opcode, ...
