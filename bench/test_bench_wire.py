"""Control-plane wire formats: building and validating a UD packet with a MAD (SM/SA rates)."""

from fabric import wire as w

_MAD = w.new_mad(w.SMPDirected, method=w.GET, attr_id=w.ATTR_NODE_INFO, hop_cnt=1).pack()


def test_build_ud_packet_with_mad(benchmark):
    benchmark(w.build_ud_packet, slid=1, dlid=2, dest_qp=0, src_qp=0, qkey=0, payload=_MAD, vl=15)


def test_split_and_parse_mad(benchmark):
    pkt = w.build_ud_packet(slid=1, dlid=2, dest_qp=0, src_qp=0, qkey=0, payload=_MAD, vl=15)

    def run():
        return w.parse_mad(w.split_ud_packet(pkt).payload)

    benchmark(run)
