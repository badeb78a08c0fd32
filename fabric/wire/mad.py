"""Management datagrams (IBA vol. 1 ch. 13-16): the common header, SMPs, SA MADs and PMA MADs.

A MAD is 256 octets. Each layout below is the common header followed by its class's fields, written
out as one field table so that every offset is visible in one place.
"""

from __future__ import annotations

from .errors import ParseError
from .fields import B, R, Struct, U

MAD_SIZE = 256
BASE_VERSION = 1

# Management classes
CLASS_SUBN_LID = 0x01
CLASS_SUBN_DIRECTED = 0x81
CLASS_SUBN_ADM = 0x03
CLASS_PERF = 0x04

CLASS_VERSIONS = {CLASS_SUBN_LID: 1, CLASS_SUBN_DIRECTED: 1, CLASS_SUBN_ADM: 2, CLASS_PERF: 1}
CLASS_NAMES = {CLASS_SUBN_LID: "SubnMgt (LID routed)", CLASS_SUBN_DIRECTED: "SubnMgt (directed route)",
               CLASS_SUBN_ADM: "SubnAdm", CLASS_PERF: "PerfMgt"}

# Methods
GET, SET, SEND, TRAP, REPORT, TRAP_REPRESS = 0x01, 0x02, 0x03, 0x05, 0x06, 0x07
GET_RESP, REPORT_RESP = 0x81, 0x86
GET_TABLE, GET_TABLE_RESP = 0x12, 0x92
GET_TRACE_TABLE = 0x13
GET_MULTI, GET_MULTI_RESP = 0x14, 0x94
DELETE, DELETE_RESP = 0x15, 0x95
RESPONSE_BIT = 0x80

METHOD_NAMES = {GET: "Get", SET: "Set", SEND: "Send", TRAP: "Trap", REPORT: "Report",
                TRAP_REPRESS: "TrapRepress", GET_RESP: "GetResp", REPORT_RESP: "ReportResp",
                GET_TABLE: "GetTable", GET_TABLE_RESP: "GetTableResp", DELETE: "Delete",
                DELETE_RESP: "DeleteResp", GET_MULTI: "GetMulti", GET_MULTI_RESP: "GetMultiResp",
                GET_TRACE_TABLE: "GetTraceTable"}

# MAD status (common bits 0-4, class specific bits 8-15)
STATUS_OK = 0x0000
STATUS_BUSY = 0x0001
STATUS_REDIRECT = 0x0002
STATUS_BAD_VERSION = 0x0004  # bad base or class version
STATUS_METHOD_UNSUPPORTED = 0x0008
STATUS_METHOD_ATTR_UNSUPPORTED = 0x000C
STATUS_INVALID_FIELD = 0x001C  # invalid value in an attribute or modifier
# SA class-specific status codes (bits 8-15)
SA_ERR_NO_RESOURCES = 0x0100
SA_ERR_REQ_INVALID = 0x0200
SA_ERR_NO_RECORDS = 0x0300
SA_ERR_TOO_MANY_RECORDS = 0x0400
SA_ERR_REQ_INVALID_GID = 0x0500
SA_ERR_REQ_INSUFFICIENT_COMPONENTS = 0x0600
SA_ERR_REQ_DENIED = 0x0700

# Attribute IDs: subnet management
ATTR_NOTICE = 0x0002
ATTR_NODE_DESC = 0x0010
ATTR_NODE_INFO = 0x0011
ATTR_SWITCH_INFO = 0x0012
ATTR_GUID_INFO = 0x0014
ATTR_PORT_INFO = 0x0015
ATTR_PKEY_TABLE = 0x0016
ATTR_SL2VL_TABLE = 0x0017
ATTR_VL_ARB_TABLE = 0x0018
ATTR_LFT = 0x0019
ATTR_RFT = 0x001A
ATTR_MFT = 0x001B
ATTR_SM_INFO = 0x0020
# SA
ATTR_CLASS_PORT_INFO = 0x0001
ATTR_INFORM_INFO = 0x0003
ATTR_NODE_RECORD = 0x0011
ATTR_PORT_INFO_RECORD = 0x0012
ATTR_PATH_RECORD = 0x0035
ATTR_MCMEMBER_RECORD = 0x0038
# PMA
ATTR_PORT_COUNTERS = 0x0012
ATTR_PORT_COUNTERS_EXT = 0x001D

_HDR_HEAD = (U("base_version", 8, BASE_VERSION), U("mgmt_class", 8), U("class_version", 8),
             U("method", 8))  # the top bit is R, the response bit: GetResp is 0x81
_HDR_TAIL = (U("tid", 64), U("attr_id", 16), R(16), U("attr_mod", 32))


class MADHeader(Struct):
    """The 24-octet common MAD header."""

    FIELDS = _HDR_HEAD + (U("status", 16), U("class_specific", 16)) + _HDR_TAIL


class MAD(Struct):
    """Any MAD: the common header and 232 octets of class-specific data."""

    FIELDS = MADHeader.FIELDS + (B("data", 232),)


class SMPLid(Struct):
    """LID-routed SMP (class 0x01)."""

    FIELDS = (_HDR_HEAD + (U("status", 16), U("class_specific", 16)) + _HDR_TAIL
              + (U("m_key", 64), R(32 * 8), B("data", 64), R(128 * 8)))
    DEFAULTS = {"mgmt_class": CLASS_SUBN_LID, "class_version": 1}


class SMPDirected(Struct):
    """Directed-route SMP (class 0x81). The D bit is the top bit of the status field; the class
    specific field holds the hop pointer and hop count."""

    FIELDS = (_HDR_HEAD + (U("d", 1), U("status", 15), U("hop_ptr", 8), U("hop_cnt", 8)) + _HDR_TAIL
              + (U("m_key", 64), U("dr_slid", 16), U("dr_dlid", 16), R(28 * 8),
                 B("data", 64), B("initial_path", 64), B("return_path", 64)))
    DEFAULTS = {"mgmt_class": CLASS_SUBN_DIRECTED, "class_version": 1}


class SAMad(Struct):
    """SA MAD (class 0x03, version 2): RMPP header, SM_Key, attribute offset, component mask."""

    FIELDS = (_HDR_HEAD + (U("status", 16), U("class_specific", 16)) + _HDR_TAIL
              + (U("rmpp_version", 8), U("rmpp_type", 8), U("rmpp_resp_time", 5), U("rmpp_flags", 3),
                 U("rmpp_status", 8), U("rmpp_data1", 32), U("rmpp_data2", 32),
                 U("sm_key", 64), U("attr_offset", 16), R(16), U("comp_mask", 64), B("data", 200)))
    DEFAULTS = {"mgmt_class": CLASS_SUBN_ADM, "class_version": 2}


class PMAMad(Struct):
    """Performance management MAD (class 0x04): 40 reserved octets, then 192 octets of data."""

    FIELDS = (_HDR_HEAD + (U("status", 16), U("class_specific", 16)) + _HDR_TAIL
              + (R(40 * 8), B("data", 192)))
    DEFAULTS = {"mgmt_class": CLASS_PERF, "class_version": 1}


assert all(c.SIZE == MAD_SIZE for c in (MAD, SMPLid, SMPDirected, SAMad, PMAMad))

# RMPP
RMPP_VERSION = 1
RMPP_TYPE_DATA, RMPP_TYPE_ACK, RMPP_TYPE_STOP, RMPP_TYPE_ABORT = 1, 2, 3, 4
RMPP_FLAG_ACTIVE, RMPP_FLAG_FIRST, RMPP_FLAG_LAST = 0x1, 0x2, 0x4
SA_DATA_LEN = 200

_BY_CLASS = {CLASS_SUBN_LID: SMPLid, CLASS_SUBN_DIRECTED: SMPDirected, CLASS_SUBN_ADM: SAMad,
             CLASS_PERF: PMAMad}


def new_mad(cls: type, **fields):
    """A MAD of layout ``cls`` with its class and class version filled in."""
    values = dict(cls.DEFAULTS)
    values.update(fields)
    return cls(**values)


def parse_mad(data) -> Struct:
    """Parse 256 octets into the layout of their management class.

    Raises ParseError for a short MAD, an unknown base version, a class version that does not
    match its class, or a management class this fabric does not implement.
    """
    data = bytes(data)
    if len(data) < MAD_SIZE:
        raise ParseError(f"MAD of {len(data)} octets is shorter than {MAD_SIZE}", kind="truncated")
    if data[0] != BASE_VERSION:
        raise ParseError(f"MAD base version {data[0]} is not {BASE_VERSION}", kind="mad_version")
    cls = _BY_CLASS.get(data[1])
    if cls is None:
        raise ParseError(f"management class 0x{data[1]:02x} is not supported", kind="mad_class")
    if data[2] != CLASS_VERSIONS[data[1]]:
        raise ParseError(f"class version {data[2]} of class 0x{data[1]:02x} is not "
                         f"{CLASS_VERSIONS[data[1]]}", kind="mad_version")
    return cls.unpack(data)


def response_method(method: int) -> int:
    return {GET: GET_RESP, SET: GET_RESP, GET_TABLE: GET_TABLE_RESP, DELETE: DELETE_RESP,
            REPORT: REPORT_RESP, GET_MULTI: GET_MULTI_RESP, GET_TRACE_TABLE: GET_TABLE_RESP}.get(
        method, method | RESPONSE_BIT)


def attr_data(mad: Struct, attr_cls: type, offset: int = 0):
    """Decode the attribute carried in a MAD's data area."""
    return attr_cls.unpack(mad.data, offset)


def put_attr(attr: Struct | bytes, size: int) -> bytes:
    """An attribute (or its octets) padded with zeros to the size of a MAD data area."""
    raw = attr if type(attr) is bytes else attr.pack()
    if len(raw) > size:
        raise ValueError(f"{type(attr).__name__} of {len(raw)} octets exceeds the {size}-octet data area")
    return raw.ljust(size, b"\0")
