"""ISA field table, encoder and decoder, data layouts."""

import numpy as np
import pytest

from trilobit.errors import ProgramError
from trilobit.isa import (
    FORMATS,
    HEADER,
    INSN_BITS,
    Buffer,
    Opcode,
    PostMode,
    WeightEncoding,
    decode,
    decode_program,
    encode,
    pack_group_meta,
    pack_post_params,
    pack_weight_rows,
    reserved_mask,
    weight_bits,
)
from trilobit.packing import pack_bits


def test_fields_do_not_overlap_and_fit_128_bits():
    for op, fields in FORMATS.items():
        used = 0
        for f in HEADER + fields:
            assert f.lsb + f.width <= INSN_BITS
            assert not used & f.mask, (op, f.name)
            used |= f.mask
        assert reserved_mask(op) == ((1 << INSN_BITS) - 1) & ~used


@pytest.mark.parametrize("op", list(Opcode))
def test_random_fields_round_trip(op, rng):
    for _ in range(50):
        values = {}
        for f in HEADER[1:] + FORMATS[op]:
            lo, hi = f.range
            values[f.name] = int(rng.integers(lo, hi + 1, dtype=np.int64))
        word = encode(op, **values)
        assert len(word) == 16
        insn = decode(word)
        assert insn.opcode == op and insn.legal
        assert {k: v for k, v in insn.fields.items() if k != "opcode"} == values


def test_bit_positions_are_little_endian():
    word = encode(Opcode.LOAD, sram=1, push_next=1)
    as_int = int.from_bytes(word, "little")
    assert as_int == 1 | (1 << 7) | (1 << 12)
    assert encode(Opcode.JUMP, target=0xABCDEF12)[1:5] == bytes([0x12, 0xEF, 0xCD, 0xAB])


def test_signed_fields_sign_extend():
    insn = decode(encode(Opcode.POST, res_zp=-128, res_mult=-2))
    assert insn["res_zp"] == -128 and insn["res_mult"] == -2


def test_out_of_range_and_unknown_fields_raise():
    with pytest.raises(ProgramError, match="rows"):
        encode(Opcode.LOAD, rows=4096)
    with pytest.raises(ProgramError, match="res_zp"):
        encode(Opcode.POST, res_zp=128)
    with pytest.raises(ProgramError, match="target"):
        encode(Opcode.LOAD, target=1)


def test_illegal_encodings_decode_without_raising():
    assert not decode(bytes(16)).legal  # zeroed memory is not a program
    assert not decode((9).to_bytes(16, "little")).legal
    reserved_bit = 1 << 127
    insn = decode(int.from_bytes(encode(Opcode.END), "little") | reserved_bit)
    assert insn.opcode == Opcode.END and not insn.legal and insn.reserved == reserved_bit
    with pytest.raises(ProgramError):
        decode_program(bytes(17))


def test_weight_rows_follow_onnx_sub_byte_order_and_pad_to_lines():
    codes = np.array([[1, 2, 3, 4, 5], [15, 0, 0, 0, 7]])
    packed = pack_weight_rows(codes, WeightEncoding.INT4, line_bytes=4)
    assert packed.size == 8
    assert list(packed[:3]) == list(pack_bits(codes[0], 4))
    assert list(packed[4:7]) == list(pack_bits(codes[1], 4))
    assert packed[3] == 0 and packed[7] == 0
    two_bit = pack_weight_rows(np.array([[1, 2, 3, 0, 1]]), WeightEncoding.TERNARY, 4)
    assert list(two_bit[:2]) == list(pack_bits(np.array([1, 2, 3, 0, 1]), 2))
    assert weight_bits(WeightEncoding.INT6) == 8 and weight_bits(WeightEncoding.FP3) == 4


def test_post_params_layout():
    p = pack_post_params(bias=[-2, 70000], multiplier=[1 << 30, 5], shift=[31, 2],
                         zero_point=[-3, 4], clip_lo=[0, -128], clip_hi=[127, 100])
    p = p.reshape(2, 16)
    assert p[0, 0:4].view("<i4")[0] == -2 and p[1, 0:4].view("<i4")[0] == 70000
    assert p[0, 4:8].view("<u4")[0] == 1 << 30
    assert list(p[0, 8:12]) == [31, 253, 0, 127]
    f = pack_post_params(multiplier=0.25, n=3, mode=PostMode.ORT).reshape(3, 16)
    assert np.all(f[:, 4:8].copy().view("<f4") == np.float32(0.25))


def test_group_meta_layout():
    meta = pack_group_meta(np.array([[1, 3]]), np.array([[7, 255]]), line_bytes=8)
    assert list(meta) == [1, 7, 3, 255, 0, 0, 0, 0]


def test_buffers_enum_values_are_stable():
    # The compiler and the RTL decode these numbers; they are part of the ISA.
    assert [int(b) for b in Buffer] == [0, 1, 2, 3, 4]
    assert int(Opcode.LOAD) == 1 and int(Opcode.JUMP) == 7
