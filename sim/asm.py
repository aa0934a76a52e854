"""Assembler and disassembler for the accelerator ISA, so tests and tools read as programs.

    asm = Assembler()
    asm.load(Buffer.INP, sram=0, dram=0x000, rows=1, row_lines=2)
    asm.load(Buffer.WGT, sram=0, dram=0x100, rows=4, row_lines=2, push_next=True)
    asm.gemm(Engine.BITSERIAL, WeightEncoding.INT8, m=1, n=4, k=16, inp=0, wgt=0, acc=0,
             pop_prev=True)
    asm.post(PostMode.DYADIC, m=1, n=4, acc=0, param=0, out=0, push_next=True)
    asm.store(Buffer.OUT, sram=0, dram=0x200, pop_prev=True)
    asm.end()
    program = asm.assemble()   # bytes, 16 per instruction

Every method encodes through :func:`trilobit.isa.encode`, so the field table is the only
definition of the encoding.
"""

from __future__ import annotations

from trilobit.isa import (
    INSN_BYTES,
    Buffer,
    Engine,
    Opcode,
    PostMode,
    WeightEncoding,
    decode_program,
    encode,
)

__all__ = ["Assembler", "disassemble"]


def _deps(pop_prev: bool, pop_next: bool, push_prev: bool, push_next: bool) -> dict:
    return {
        "pop_prev": int(pop_prev),
        "pop_next": int(pop_next),
        "push_prev": int(push_prev),
        "push_next": int(push_next),
    }


class Assembler:
    """Builds a program one instruction at a time; :meth:`assemble` returns its bytes."""

    def __init__(self) -> None:
        self.words: list[bytes] = []

    def __len__(self) -> int:
        return len(self.words)

    @property
    def pc(self) -> int:
        """Index the next instruction will have."""
        return len(self.words)

    def emit(self, opcode: Opcode, **fields: int) -> int:
        """Append one instruction; returns its index."""
        self.words.append(encode(opcode, **fields))
        return len(self.words) - 1

    def raw(self, word: bytes | int) -> int:
        """Append 16 raw bytes (e.g. an illegal instruction in an adversarial test)."""
        if isinstance(word, int):
            word = word.to_bytes(INSN_BYTES, "little")
        if len(word) != INSN_BYTES:
            raise ValueError(f"raw instruction must be {INSN_BYTES} bytes, got {len(word)}")
        self.words.append(bytes(word))
        return len(self.words) - 1

    def load(
        self, buf: Buffer, sram: int, dram: int, rows: int = 1, row_lines: int = 1,
        stride: int = 0, flip: bool = False, *, pop_next: bool = False, push_next: bool = False,
    ) -> int:
        """LOAD ``rows`` x ``row_lines`` lines from DATA_BASE + ``dram`` (row stride ``stride``
        bytes) into ``buf`` at line ``sram``; ``flip`` XORs bit 7 (uint8 -> int8 - 128)."""
        return self.emit(
            Opcode.LOAD, buf=int(buf), sram=sram, dram=dram, rows=rows, row_lines=row_lines,
            stride=stride, flip=int(flip), **_deps(False, pop_next, False, push_next),
        )

    def store(
        self, buf: Buffer, sram: int, dram: int, rows: int = 1, row_lines: int = 1,
        stride: int = 0, *, pop_prev: bool = False, push_prev: bool = False,
    ) -> int:
        """STORE ``rows`` x ``row_lines`` lines of ``buf`` from line ``sram`` to memory."""
        return self.emit(
            Opcode.STORE, buf=int(buf), sram=sram, dram=dram, rows=rows, row_lines=row_lines,
            stride=stride, **_deps(pop_prev, False, push_prev, False),
        )

    def gemm(
        self, engine: Engine, wfmt: WeightEncoding, m: int, n: int, k: int, inp: int, wgt: int,
        acc: int, accumulate: bool = False, meta_line: int | None = None, *,
        pop_prev: bool = False, pop_next: bool = False, push_prev: bool = False,
        push_next: bool = False,
    ) -> int:
        """GEMM: ACC[m, n] (+)= sum_k INP[m, k] * W[n, k] on ``engine``."""
        return self.emit(
            Opcode.GEMM, engine=int(engine), wfmt=int(wfmt), accumulate=int(accumulate),
            meta=int(meta_line is not None), meta_line=meta_line or 0, m=m, n=n, k=k,
            inp=inp, wgt=wgt, acc=acc, **_deps(pop_prev, pop_next, push_prev, push_next),
        )

    def post(
        self, mode: PostMode, m: int, n: int, acc: int = 0, param: int = 0, out: int = 0, *,
        out_unsigned: bool = False, bias: bool = False, residual_line: int | None = None,
        res_zp: int = 0, res_mult: int = 0, no_acc: bool = False,
        pop_prev: bool = False, pop_next: bool = False, push_prev: bool = False,
        push_next: bool = False,
    ) -> int:
        """POST: bias, residual, requantization (or write-back to ACC), clip."""
        return self.emit(
            Opcode.POST, mode=int(mode), m=m, n=n, acc=acc, param=param, out=out,
            out_unsigned=int(out_unsigned), bias=int(bias),
            residual=int(residual_line is not None), res=residual_line or 0, res_zp=res_zp,
            res_mult=res_mult, no_acc=int(no_acc),
            **_deps(pop_prev, pop_next, push_prev, push_next),
        )

    def sync(self) -> int:
        """Barrier: dispatch waits until every unit is idle."""
        return self.emit(Opcode.SYNC)

    def end(self) -> int:
        """Wait until every unit is idle, then report DONE."""
        return self.emit(Opcode.END)

    def jump(self, target: int) -> int:
        """Continue at instruction ``target``."""
        return self.emit(Opcode.JUMP, target=target)

    def assemble(self) -> bytes:
        return b"".join(self.words)


def disassemble(program: bytes) -> str:
    """One line per instruction: index, then mnemonic and nonzero fields."""
    return "\n".join(f"{i:5d}  {insn}" for i, insn in enumerate(decode_program(program)))
