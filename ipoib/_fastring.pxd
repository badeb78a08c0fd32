# C-level API of ipoib._fastring for the other fast-path modules (ipoib._fastrx, ipoib._fastpath).
# The helpers and ring methods that run per packet have their bodies here, so that every module
# that cimports them inlines them instead of calling through a pointer.
from libc.stdint cimport uint64_t
from libc.string cimport memcpy


cdef extern from "csum.h" nogil:
    uint64_t ibf_sum32(const unsigned char *p, size_t n)
    uint64_t ibf_copy_sum32(unsigned char *d, const unsigned char *p, size_t n)


cdef enum:
    # Copies at least this long run without the GIL; below it the release costs more than the copy.
    NOGIL_COPY = 2048
    NOGIL_DRAIN = 65536  # a TX drain lets the GIL go from this many octets of packets on
    META = 8  # TX slot header: DLID(2) SL(1) reserved(1) DestQP(4)


cdef inline void tx_address(unsigned char *d, unsigned int dlid, unsigned int sl, unsigned int dqpn) noexcept nogil:
    """A TX slot's 8-octet header (META): where the frame goes (DLID, SL, destination QPN), as one
    store: DLID(2) SL(1) reserved(1) DestQP(4), each big-endian."""
    cdef uint64_t v = ((<uint64_t> ((dlid >> 8) & 0xFF)) | (<uint64_t> (dlid & 0xFF) << 8)
                       | (<uint64_t> (sl & 0xF) << 16) | (<uint64_t> ((dqpn >> 24) & 0xFF) << 32)
                       | (<uint64_t> ((dqpn >> 16) & 0xFF) << 40) | (<uint64_t> ((dqpn >> 8) & 0xFF) << 48)
                       | (<uint64_t> (dqpn & 0xFF) << 56))
    memcpy(d, &v, 8)


cdef class PacketRing:
    cdef readonly Py_ssize_t slots
    cdef readonly Py_ssize_t slot_size
    cdef object _storage             # what owns the slots' memory (_buf); numpy views keep it
    cdef object _lstorage            # and the lengths' (_len)
    cdef unsigned char *_buf
    cdef unsigned int *_len
    cdef Py_ssize_t _head            # next slot to pop
    cdef Py_ssize_t _count
    cdef readonly unsigned long long pushed
    cdef readonly unsigned long long popped
    cdef readonly unsigned long long dropped_full
    cdef readonly unsigned long long dropped_oversize

    cdef inline Py_ssize_t _reserve(self, Py_ssize_t n):
        """The slot for an ``n``-octet entry at the tail, or -1 (counted) if it is full or too big."""
        cdef Py_ssize_t slot
        if n > self.slot_size:
            self.dropped_oversize += 1
            return -1
        if self._count >= self.slots:
            self.dropped_full += 1
            return -1
        if self._count == 0:
            # an empty ring starts over at its first slot: light traffic (a ping, an ACK) keeps to
            # a few slots whose pages are mapped and in the cache, instead of walking the whole
            # ring, a page fault and a cold line per packet for its first thousand packets
            self._head = 0
            return 0
        slot = self._head + self._count
        return slot - self.slots if slot >= self.slots else slot

    cdef inline void _commit(self, Py_ssize_t slot, Py_ssize_t n):
        self._len[slot] = <unsigned int> n
        self._count += 1
        self.pushed += 1

    cdef inline bint _push(self, const unsigned char *src, Py_ssize_t n)
    cdef inline bytes _pop(self)
    cdef inline bint _push_ud(self, unsigned int dlid, unsigned int sl, unsigned int dqpn,
                              const unsigned char *frame, Py_ssize_t n):
        """A frame to send (``n`` octets) into the next slot after its META: where it goes."""
        cdef Py_ssize_t slot = self._reserve(n + META)
        cdef unsigned char *dst
        if slot < 0:
            return False
        dst = self._buf + slot * self.slot_size
        tx_address(dst, dlid, sl, dqpn)
        if n:
            memcpy(dst + META, frame, n)
        self._commit(slot, n + META)
        return True

    cpdef tuple drain_ud(self, bytearray seg, unsigned int slid, unsigned int pkey, unsigned int qkey,
                         unsigned int src_qp, Py_ssize_t budget)
    cdef Py_ssize_t drain_ud_c(self, bytearray seg, unsigned int slid, unsigned int pkey, unsigned int qkey,
                               unsigned int src_qp, Py_ssize_t budget, unsigned long long *words,
                               unsigned long long *octets) except -1
    cdef Py_ssize_t _drain_loop(self, unsigned char *out, Py_ssize_t off, Py_ssize_t take, unsigned int slid,
                                unsigned int pkey, unsigned int qkey, unsigned int src_qp, Py_ssize_t *wd,
                                Py_ssize_t *oc) noexcept nogil


cdef Py_ssize_t push_gso(PacketRing ring, unsigned int dlid, unsigned int sl, unsigned int dqpn,
                         const unsigned char *f, Py_ssize_t n, Py_ssize_t gso, Py_ssize_t l3) noexcept


cdef inline unsigned int flow_hash(const unsigned char *f, Py_ssize_t n, bint udp_ports) noexcept nogil:
    """Hash of an IPoIB frame's IPv4 flow: the TX queue for TSS and the RX queue for RSS.

    Addresses and protocol always; TCP ports too, and UDP ports when ``udp_ports`` (ethtool's
    ``rx-flow-hash udp4 sdfn``; the default is ``sd``, as ixgbe's). Ports count only in
    unfragmented datagrams (MF clear, offset 0), and a fragment carries none, so with UDP ports
    hashed, a flow's fragmented datagrams take another queue than its whole ones and the two
    can pass each other; hashing UDP by addresses keeps every datagram between two hosts in
    order, as the standard provider's single queue does. Non-IPv4 frames hash to 0, so ARP
    stays on one queue, in order."""
    cdef unsigned int h, ihl
    if n < 4 + 20 or f[0] != 0x08 or f[1] != 0x00:
        return 0
    h = ((f[16] << 24) | (f[17] << 16) | (f[18] << 8) | f[19]) ^ ((f[20] << 24) | (f[21] << 16) | (f[22] << 8) | f[23])
    h ^= f[13]
    ihl = (f[4] & 0xF) * 4
    if (f[13] == 6 or (f[13] == 17 and udp_ports)) and n >= 4 + ihl + 4 and not ((f[10] & 0x3F) or f[11]):
        h ^= (f[4 + ihl] << 24) | (f[5 + ihl] << 16) | (f[6 + ihl] << 8) | f[7 + ihl]
    h *= 0x9E3779B1U
    return h ^ (h >> 16)


cdef inline unsigned int csum_fold(unsigned long long acc) noexcept nogil:
    while acc >> 16:
        acc = (acc & 0xFFFF) + (acc >> 16)
    return <unsigned int> acc


cdef inline unsigned long long csum_native(unsigned long long acc, unsigned long long s) noexcept nogil:
    """Add a sum of native-order words (csum.h) that starts at an even offset of the checksummed
    data: folded and with its octets swapped, it is the sum of the big-endian words."""
    s = csum_fold(s)
    return acc + (((s & 0xFF) << 8) | (s >> 8))


cdef inline unsigned long long csum_add(unsigned long long acc, const unsigned char *p, Py_ssize_t n) noexcept nogil:
    """Add ``p[:n]`` to a ones' complement sum as 16-bit big-endian words (an odd last octet is
    the high half of a word, as when it ends the checksummed data). Long runs go eight octets at a
    time in native order: the ones' complement sum commutes with swapping the octets of every word,
    so the native sum, folded and swapped, is the big-endian one."""
    cdef Py_ssize_t i = 0
    if n >= 32:
        i = n & ~7
        acc = csum_native(acc, ibf_sum32(p, i))
    while i + 1 < n:
        acc += (p[i] << 8) | p[i + 1]
        i += 2
    if i < n:
        acc += p[i] << 8
    return acc
