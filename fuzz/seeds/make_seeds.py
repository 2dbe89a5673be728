#!/usr/bin/env python3
"""Regenerates the hand-made seed files under fuzz/seeds/. Run from fuzz/: python3 seeds/make_seeds.py"""
import os

def h(s):
    return bytes.fromhex("".join(s.split()))

# tests/wire_vectors.rs
VXLAN = h("0800000000002a0002000000000b02000000000a080045000028000100004001"
          "eeaac6130001c6130002080041771234000176787461702d766563746f72")
GENEVE = h("054065581234560001028001deadbeefffff01020011223344556677ffffffff"
           "ffff02000000000a0806000108000604000102000000000ac613000100000000"
           "0000c6130002")
GENEVE_OAM = h("008065580000070002000000000b02000000000a86dd60000000000911402001"
               "0db800000000000000000000000120010db800000000000000000000000203e8"
               "07d0000920af78")

INNER = VXLAN[8:]                     # Ether(02:..:0b <- 02:..:0a)/IPv4/ICMP
INNER_FROM_C = INNER[:6] + h("02000000000c") + INNER[12:]
INNER_LOCAL = INNER[:6] + h("020000000001") + INNER[12:]   # the local MAC: loop drop
INNER_STATIC = INNER[:6] + h("02000000000b") + INNER[12:]  # static MAC from another VTEP

def vx(vni, inner, flags=0x08, rsvd=b"\0\0\0", last=0):
    return bytes([flags]) + rsvd + vni.to_bytes(3, "big") + bytes([last]) + inner

def gn(vni, opts=b"", inner=INNER, flags=0, proto=0x6558, optlen=None, ver=0, rsvd=0):
    ol = len(opts) // 4 if optlen is None else optlen
    return bytes([(ver << 6) | ol, flags]) + proto.to_bytes(2, "big") + vni.to_bytes(3, "big") + bytes([rsvd]) + opts + inner

NONCRIT_OPTS = h("ffff0102 0011223344556677 01020001 deadbeef")
geneve_ok = gn(0x123456, NONCRIT_OPTS)
geneve_opt63 = gn(0x123456, h("ffff011e") + bytes(120) + h("0001001f") + bytes(124))  # Opt Len 63 = 252 bytes

def write(target, name, data):
    with open(os.path.join("seeds", target, name), "wb") as f:
        f.write(data)

# receive_path: selector byte (bit0 = geneve, bits1-2 = address form, bit3 = age), source octet, payload
rp = {
    "vxlan_vector": b"\x00\x01" + VXLAN,
    "vxlan_vector_v6mapped": b"\x02\x07" + VXLAN,
    "vxlan_vector_v6": b"\x04\x08" + VXLAN,
    "vxlan_move": b"\x00\x09" + VXLAN,
    "vxlan_age": b"\x08\x01" + VXLAN,
    "vxlan_other_src": b"\x06\x05" + vx(42, INNER_FROM_C),
    "vxlan_local_mac_loop": b"\x00\x03" + vx(42, INNER_LOCAL),
    "vxlan_static_mismatch": b"\x00\x03" + vx(42, INNER_STATIC),
    "vxlan_reserved_bits": b"\x00\x04" + vx(42, INNER, flags=0xff, rsvd=b"\xff\xff\xff", last=0xff),
    "vxlan_no_i_flag": b"\x00\x04" + vx(42, INNER, flags=0x00),
    "vxlan_vni_ffffff": b"\x00\x04" + vx(0xFFFFFF, INNER),
    "vxlan_truncated_header": b"\x00\x04" + VXLAN[:7],
    "vxlan_short_frame": b"\x00\x04" + VXLAN[:8 + 13],
    "vxlan_min_frame": b"\x00\x04" + VXLAN[:8 + 14],
    "geneve_vector_critical": b"\x01\x01" + GENEVE,
    "geneve_oam_vector": b"\x01\x01" + GENEVE_OAM,
    "geneve_noncritical_opts": b"\x01\x02" + geneve_ok,
    "geneve_noncritical_opts_v6": b"\x05\x02" + geneve_ok,
    "geneve_no_opts": b"\x01\x02" + gn(0x123456),
    "geneve_vni_ffffff": b"\x01\x02" + gn(0xFFFFFF),
    "geneve_reserved_bits": b"\x01\x02" + gn(0x123456, flags=0x3f, rsvd=0xff),
    "geneve_optlen63": b"\x01\x02" + geneve_opt63,
    "geneve_optlen63_truncated": b"\x01\x02" + gn(0x123456, optlen=63, inner=bytes(40)),
    "geneve_option_overrun": b"\x01\x02" + gn(0x123456, h("0102001f deadbeef")),
    "geneve_version1": b"\x01\x02" + gn(0x123456, ver=1),
    "geneve_wrong_proto": b"\x01\x02" + gn(0x123456, proto=0x0800),
    "geneve_truncated": b"\x01\x02" + GENEVE[:7],
}
for k, v in rp.items():
    write("receive_path", k, v)

go = {
    "geneve_vector": GENEVE,
    "geneve_oam_vector": GENEVE_OAM,
    "vxlan_vector": VXLAN,
    "options_area_vector": GENEVE[8:28],
    "geneve_noncritical": geneve_ok,
    "geneve_optlen63": geneve_opt63,
    "area_252": geneve_opt63[8:260],
    "area_two_max_options": h("ffff011f") + bytes(124) + h("0001001f") + bytes(124),
    "area_reserved_len_bits": h("0102e001 deadbeef ffff01e0"),
    "area_partial_header": h("ffffff"),
    "area_overrun": h("0102001f deadbeef"),
    "optlen63_truncated": gn(1, optlen=63, inner=bytes(40)),
    "truncated_base": GENEVE[:7],
    "version3": gn(1, ver=3),
    "vni_ffffff": gn(0xFFFFFF),
}
for k, v in go.items():
    write("geneve_options", k, v)

cr = [
    '{"op":"fdb_show"}',
    '{"op":"stats"}',
    '{"op":"fdb_add","mac":"02:00:00:00:00:02","dst":"198.18.0.2:4789"}',
    '{"op":"fdb_del","mac":"00:00:00:00:00:00","dst":"198.18.0.3"}',
    '{"op":"fdb_add","mac":"02:00:00:00:00:02","dst":"[2001:db8::2]:6081"}',
    '{"op":"fdb_del","mac":"02:00:00:00:00:02"}',
]
for i, line in enumerate(cr):
    write("control_request", f"req{i}", (line + "\n").encode())
