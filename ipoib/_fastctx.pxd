# The fields of NetdevContext that the accelerated provider reads per burst (see _fastctx.pyx).

cdef class ContextCore:
    cdef public object hca, port, qp, stats, rxq, sendq, rx_sink, running, deliver, reflect
    cdef public object schedule_poll, wake_queue
