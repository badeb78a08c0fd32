"""Subnet Administrator (IBA vol. 1 chapter 15), sans-IO.

:class:`SubnetAdministrator` takes SA MADs and returns actions::

    sa = SubnetAdministrator(subnet, partitions, McastManager(), sm_key=0,
                             route_hops=..., link_mtu_rate=...)
    actions = sa.handle(mad_octets, Requester(lid=5, qpn=1, pkey=0xffff), now)

Actions are frozen dataclasses: :class:`SaReply` (the response MADs to send back to the requester:
one MAD, or the RMPP segments of a GetTableResp), :class:`McastChanged` (a group's spanning tree
changed: the SM reprograms that MLID's MFT entries), :class:`SaReport` (a Report(Notice) for an
InformInfo subscriber; resent by :meth:`SubnetAdministrator.tick` until a ReportResp arrives).

The SA never raises out of :meth:`~SubnetAdministrator.handle`: a request it cannot serve gets an
error status, and an unexpected exception inside a handler is logged and answered with
SA_ERR_NO_RESOURCES. docs/sa.md describes the behaviour attribute by attribute.

The modules follow OpenSM's split of its SA: :mod:`.dispatch` is the SA itself (decoding,
dispatch, replies, the lookups the handlers share, the SM's hooks); :mod:`.path_record`,
:mod:`.mcmember_record`, :mod:`.records` (ClassPortInfo, NodeRecord, PortInfoRecord) and
:mod:`.informinfo` (subscriptions and Reports) hold one attribute family's handlers each, as
mixins of :class:`SubnetAdministrator`; :mod:`.selector` the MTU/rate/lifetime selector rule they
share, and :mod:`.actions` the types they return and raise.
"""

from ...wire.sa_attrs import (NR_COMP_FULL, PIR_COMP_FULL, SELECTOR_BEST, SELECTOR_EXACT,
                              SELECTOR_GT, SELECTOR_LT)
from .actions import McastChanged, Requester, SaReply, SaReport
from .dispatch import SubnetAdministrator
from .path_record import GraphPaths
from .records import SA_CAP_GET_SET_NOTICE, SA_CAP_UD_MCAST

__all__ = ["SubnetAdministrator", "Requester", "SaReply", "McastChanged", "SaReport", "GraphPaths",
           "NR_COMP_FULL", "PIR_COMP_FULL", "SA_CAP_UD_MCAST", "SA_CAP_GET_SET_NOTICE",
           "SELECTOR_GT", "SELECTOR_LT", "SELECTOR_EXACT", "SELECTOR_BEST"]
