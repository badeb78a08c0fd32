# The fields of the devices' objects that the compiled data paths read per burst (see _corefast.pyx).

cdef class CountersCore:
    cdef public object pending

cdef class PortCore:
    cdef public object num, state, phys, lid, lmc, pkeys, counters

cdef class QPCore:
    cdef public object qpn, qkey, pkey_index, sent, received

cdef class DeviceCore:
    cdef public dict ports
    cdef public list outbox, events, agents
    cdef public object drops

cdef class SwitchCore(DeviceCore):
    cdef public object lft, lft_top, _flags, _mtu, _pkeys, _dirty, _dirty_ports

cdef class HCACore(DeviceCore):
    cdef public object rx_accel, user_mad, sm_consumer
    cdef public dict qps, smp_waiting
