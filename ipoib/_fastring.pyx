# cython: language_level=3
"""Packet rings of the accelerated data path: preallocated ring buffers, seen as numpy arrays.

A ring is one contiguous block of ``slots x slot_size`` octets plus a length per slot (its
``buffer`` and ``lengths``, numpy arrays over that memory); head and tail are plain C integers, so
pushing and popping a packet is a memcpy and two index updates, with no Python object per slot.
The provider's TX queues and the receive engine's RSS queues are rings; the flow hash that picks
their queue and the checksum helpers are in ``_fastring.pxd``.
"""

from libc.stdlib cimport calloc, free
from libc.string cimport memcpy
from cpython.buffer cimport PyBUF_FORMAT, PyBUF_ND
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_Resize
from fabric._wirefast cimport write_ud_packet

cdef extern from "<sys/mman.h>" nogil:
    void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset)
    int munmap(void *addr, size_t length)
    int madvise(void *addr, size_t length, int advice)
    int PROT_READ, PROT_WRITE, MAP_PRIVATE, MAP_ANONYMOUS
    void *MAP_FAILED
    int MADV_NOHUGEPAGE

MAPPED_MIN = 1 << 16  # a ring this big or bigger lives in its own anonymous mapping


cdef class _Storage:
    """The memory of a ring's or a ring set's slots, or of their lengths, as a writable buffer of
    octets: what the rings' numpy views are made over and keep alive."""
    cdef unsigned char *ptr
    cdef size_t size
    cdef bint mapped
    cdef Py_ssize_t _shape[1]

    def __getbuffer__(self, Py_buffer *view, int flags):
        self._shape[0] = <Py_ssize_t> self.size
        view.buf = self.ptr
        view.obj = self
        view.len = <Py_ssize_t> self.size
        view.readonly = 0
        view.itemsize = 1
        view.format = NULL
        if flags & PyBUF_FORMAT:
            view.format = b"B"
        view.ndim = 1
        view.shape = self._shape if flags & PyBUF_ND else NULL
        view.strides = NULL
        view.suboffsets = NULL
        view.internal = NULL

    def __releasebuffer__(self, Py_buffer *view):
        pass

    def __dealloc__(self):
        if self.ptr != NULL:
            if self.mapped:
                munmap(self.ptr, self.size)
            else:
                free(self.ptr)
            self.ptr = NULL


cdef enum:
    PAGE = 4096


cdef _Storage _storage_of(size_t total, bint mapped, Py_ssize_t slots, Py_ssize_t slot_size):
    cdef _Storage st = _Storage.__new__(_Storage)
    if mapped:
        # An anonymous mapping: its pages are zero and cost nothing until a packet is written
        # there (heap memory would be cleared at once: 0.6 ms and up a ring set, and the memory,
        # for every HCA a fabric starts). Private: a shared one is shmem, whose first touch of a
        # page costs twice as much; and no transparent huge pages, which would map 2 MB at a
        # packet's first touch.
        st.ptr = <unsigned char *> mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        if <void *> st.ptr == MAP_FAILED:
            st.ptr = NULL
            raise MemoryError(f"no memory for rings of {slots} x {slot_size} octets")
        st.mapped = True
        madvise(st.ptr, total, MADV_NOHUGEPAGE)
    else:
        st.ptr = <unsigned char *> calloc(total, 1)
        if st.ptr == NULL:
            raise MemoryError(f"no memory for a ring of {slots} x {slot_size} octets")
    st.size = total
    return st


cdef inline size_t _chunk(Py_ssize_t slots, Py_ssize_t slot_size):
    """A ring's share of a ring set: its slots, to a whole page (so that the next ring's first
    slot starts one)."""
    return (<size_t> slots * <size_t> slot_size + PAGE - 1) & ~(<size_t> PAGE - 1)


cdef class PacketRing:
    """A bounded FIFO of packets with ``slots`` entries of at most ``slot_size`` octets.

    Its memory is its own, or (``shared``, ``index``, ``lengths``) the ``index``-th share of a
    ring set's (:func:`ring_set`)."""

    def __cinit__(self, Py_ssize_t slots, Py_ssize_t slot_size, _Storage shared=None, Py_ssize_t index=0,
                  _Storage lengths=None):
        cdef size_t data
        if slots < 1 or slot_size < 1:
            raise ValueError("slots and slot_size must be positive")
        self.slots = slots
        self.slot_size = slot_size
        data = <size_t> slots * <size_t> slot_size
        # the lengths live apart from the slots, in the heap: right after page-aligned slots of a
        # page each, every slot's first line and the lengths' first line would share an L1 set and
        # the low 12 bits of their addresses (pushes and pops of a 4096-octet ring half as fast)
        if shared is None:
            self._storage = _storage_of(data, data >= MAPPED_MIN, slots, slot_size)
            self._lstorage = _storage_of(<size_t> slots * sizeof(unsigned int), False, slots, slot_size)
            self._buf = (<_Storage> self._storage).ptr
            self._len = <unsigned int *> (<_Storage> self._lstorage).ptr
        else:
            if (lengths is None or index < 0 or (<size_t> index + 1) * _chunk(slots, slot_size) > shared.size
                    or (<size_t> index + 1) * <size_t> slots * sizeof(unsigned int) > lengths.size):
                raise ValueError(f"ring {index} of {slots} x {slot_size} octets is outside its ring set")
            self._storage = shared
            self._lstorage = lengths
            self._buf = shared.ptr + <size_t> index * _chunk(slots, slot_size)
            self._len = <unsigned int *> lengths.ptr + <size_t> index * <size_t> slots
        self._head = 0
        self._count = 0

    @property
    def storage(self):
        """The block of memory this ring lives in: its own, or its ring set's (shared)."""
        return self._storage

    # numpy only when someone looks: a device host never does, and importing numpy was a twentieth
    # of a fabric's launch
    @property
    def buffer(self):
        """The slots as a numpy uint8 array [slots, slot_size] over the ring's own memory."""
        import numpy as np

        cdef _Storage st = <_Storage> self._storage
        return np.frombuffer(st, dtype=np.uint8, count=self.slots * self.slot_size,
                             offset=self._buf - st.ptr).reshape(self.slots, self.slot_size)

    @property
    def lengths(self):
        """Each slot's length, a numpy uint32 array [slots] over the ring's own memory."""
        import numpy as np

        cdef _Storage st = <_Storage> self._lstorage
        return np.frombuffer(st, dtype=np.uint32, count=self.slots, offset=<unsigned char *> self._len - st.ptr)

    def __len__(self):
        return self._count

    @property
    def free(self):
        return self.slots - self._count

    cdef inline bint _push(self, const unsigned char *src, Py_ssize_t n):
        cdef Py_ssize_t slot = self._reserve(n)
        cdef unsigned char *dst
        if slot < 0:
            return False
        dst = self._buf + slot * self.slot_size
        if n >= NOGIL_COPY:
            with nogil:
                memcpy(dst, src, n)
        else:
            memcpy(dst, src, n)
        self._commit(slot, n)
        return True

    def push(self, const unsigned char[::1] packet not None):
        return self._push(&packet[0] if packet.shape[0] else <const unsigned char *> b"", packet.shape[0])

    def push_many(self, packets):
        cdef Py_ssize_t n = 0
        cdef const unsigned char[::1] view
        for p in packets:
            view = p
            if not self._push(&view[0] if view.shape[0] else <const unsigned char *> b"", view.shape[0]):
                break
            n += 1
        return n

    cdef inline bytes _pop(self):
        cdef Py_ssize_t slot = self._head
        cdef bytes out = PyBytes_FromStringAndSize(
            <char *> (self._buf + slot * self.slot_size), self._len[slot])
        self._head = slot + 1 if slot + 1 < self.slots else 0
        self._count -= 1
        self.popped += 1
        return out

    def pop(self):
        if self._count == 0:
            return None
        return self._pop()

    def pop_many(self, Py_ssize_t budget):
        cdef list out = []
        while self._count > 0 and len(out) < budget:
            out.append(self._pop())
        return out

    def stats(self):
        return {"slots": self.slots, "slot_size": self.slot_size, "used": self._count,
                "pushed": self.pushed, "popped": self.popped, "dropped_full": self.dropped_full,
                "dropped_oversize": self.dropped_oversize}

    # -- the TX queue of the accelerated provider: slots hold an 8-octet address then the frame --

    cpdef tuple drain_ud(self, bytearray seg, unsigned int slid, unsigned int pkey, unsigned int qkey,
                         unsigned int src_qp, Py_ssize_t budget):
        """Build a UD packet from each queued frame, appended to ``seg`` length-prefixed (the link
        burst format). One C loop, no Python object per packet. Returns (packets, words, octets)."""
        cdef unsigned long long words = 0, octets = 0
        n = self.drain_ud_c(seg, slid, pkey, qkey, src_qp, budget, &words, &octets)
        return n, words, octets

    cdef Py_ssize_t drain_ud_c(self, bytearray seg, unsigned int slid, unsigned int pkey, unsigned int qkey,
                               unsigned int src_qp, Py_ssize_t budget, unsigned long long *words,
                               unsigned long long *octets) except -1:
        """drain_ud for the compiled provider: the packets built, their words and octets added to
        ``*words`` and ``*octets`` (no tuple per burst)."""
        cdef Py_ssize_t i, slot, need = 0, off
        cdef unsigned char *out
        cdef Py_ssize_t wd = 0, oc = 0
        cdef Py_ssize_t take = self._count if self._count < budget else budget
        if seg is None:
            raise TypeError("drain_ud needs a bytearray to build the burst into, not None")
        if take <= 0:
            return 0
        for i in range(take):
            slot = self._head + i
            if slot >= self.slots:
                slot -= self.slots
            need += 2 + 28 + (self._len[slot] - META) + 3 + 6
        off = len(seg)
        PyByteArray_Resize(seg, off + need)
        out = <unsigned char *> PyByteArray_AS_STRING(seg)
        if need >= NOGIL_DRAIN:  # a short burst: letting the GIL go costs more than building it
            with nogil:
                off = self._drain_loop(out, off, take, slid, pkey, qkey, src_qp, &wd, &oc)
        else:
            off = self._drain_loop(out, off, take, slid, pkey, qkey, src_qp, &wd, &oc)
        self.popped += take
        PyByteArray_Resize(seg, off)
        words[0] += wd
        octets[0] += oc
        return take

    cdef Py_ssize_t _drain_loop(self, unsigned char *out, Py_ssize_t off, Py_ssize_t take, unsigned int slid,
                                unsigned int pkey, unsigned int qkey, unsigned int src_qp, Py_ssize_t *wd,
                                Py_ssize_t *oc) noexcept nogil:
        """drain_ud_c's loop: ``take`` packets built at ``out + off``; returns the new offset."""
        cdef Py_ssize_t i, slot, n, plen
        cdef unsigned char *src
        cdef unsigned int dlid, sl, dqpn
        for i in range(take):
            slot = self._head
            src = self._buf + slot * self.slot_size
            n = self._len[slot] - META
            dlid = (src[0] << 8) | src[1]
            sl = src[2]
            dqpn = (src[5] << 16) | (src[6] << 8) | src[7]
            plen = write_ud_packet(out + off + 2, src + META, n, slid, dlid, sl, pkey, dqpn, src_qp, qkey, 0, 0, 0)
            out[off] = (plen >> 8) & 0xFF
            out[off + 1] = plen & 0xFF
            off += 2 + plen
            wd[0] += (plen - 2) >> 2
            oc[0] += n
            self._head = slot + 1 if slot + 1 < self.slots else 0
            self._count -= 1
        return off


cdef Py_ssize_t push_gso(PacketRing ring, unsigned int dlid, unsigned int sl, unsigned int dqpn,
                         const unsigned char *f, Py_ssize_t n, Py_ssize_t gso, Py_ssize_t l3) noexcept:
    """UDP segmentation in C: the GSO frame ``f`` (link header, IPv4 and UDP headers of the first
    segment, then the whole payload) as datagrams of ``gso`` payload octets, each into a ring slot
    with its own IP total length, identification and checksum and UDP length and checksum, octet
    for octet what ipoib.gso.segment makes. The caller made sure the ring has room; returns the
    octets queued (frames, link headers included)."""
    cdef Py_ssize_t plen = n - l3 - 28, o = 0, seg, slot, flen, total = 0
    cdef unsigned int ident0 = (f[l3 + 4] << 8) | f[l3 + 5], ident, ulen, c
    cdef unsigned long long acc
    cdef unsigned char *d
    cdef unsigned char *ip
    cdef unsigned char *udp
    cdef int i = 0
    while True:
        seg = plen - o if plen - o < gso else gso
        flen = l3 + 28 + seg
        slot = ring._reserve(flen + META)
        if slot < 0:
            break
        d = ring._buf + slot * ring.slot_size
        tx_address(d, dlid, sl, dqpn)
        memcpy(d + META, f, l3 + 24)  # link header, IPv4 header, UDP ports
        ip = d + META + l3
        ip[2] = ((28 + seg) >> 8) & 0xFF
        ip[3] = (28 + seg) & 0xFF
        ident = (ident0 + i) & 0xFFFF
        ip[4] = ident >> 8
        ip[5] = ident & 0xFF
        ip[10] = 0
        ip[11] = 0
        c = (~csum_fold(csum_add(0, ip, 20))) & 0xFFFF
        ip[10] = c >> 8
        ip[11] = c & 0xFF
        udp = ip + 20
        ulen = 8 + seg
        udp[4] = (ulen >> 8) & 0xFF
        udp[5] = ulen & 0xFF
        udp[6] = 0
        udp[7] = 0
        memcpy(udp + 8, f + l3 + 28 + o, seg)
        acc = csum_add(0, ip + 12, 8)  # the pseudo-header: addresses, protocol, UDP length
        acc += 17 + ulen
        acc = csum_add(acc, udp, ulen)
        c = (~csum_fold(acc)) & 0xFFFF
        if c == 0:
            c = 0xFFFF
        udp[6] = c >> 8
        udp[7] = c & 0xFF
        ring._commit(slot, flen + META)
        total += flen
        i += 1
        o += seg
        if o >= plen:
            break
    return total


def ring_set(cls, Py_ssize_t count, Py_ssize_t slots, Py_ssize_t slot_size):
    """``count`` rings of class ``cls`` (:class:`PacketRing` or a subclass) in one block of
    memory (their lengths in one more, in the heap): a provider's queues are one mapping, one
    ``mmap`` and one ``madvise`` where each ring of its own took two calls, most of what starting
    an interface cost (hundreds of starts while the SM sweeps). The blocks live as long as any of
    their rings or their arrays."""
    if count < 1:
        raise ValueError("a ring set has at least one ring")
    if not issubclass(cls, PacketRing):
        raise TypeError(f"{cls!r} is not a PacketRing")
    if slots < 1 or slot_size < 1:
        raise ValueError("slots and slot_size must be positive")
    if <size_t> slots * <size_t> slot_size < MAPPED_MIN:  # small rings stay in the heap, each its own
        return [cls(slots, slot_size) for _ in range(count)]
    cdef _Storage st = _storage_of(<size_t> count * _chunk(slots, slot_size), True, slots, slot_size)
    cdef _Storage lengths = _storage_of(<size_t> count * <size_t> slots * sizeof(unsigned int), False, slots, slot_size)
    return [cls.__new__(cls, slots, slot_size, st, i, lengths) for i in range(count)]
