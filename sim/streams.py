"""Valid/ready stream helpers for testbenches, with random stalls on either side.

Two families, one handshake rule (``amaranth.lib.stream``): a transfer happens on a rising
clock edge where both ``valid`` and ``ready`` are high; a sender keeps ``valid`` and the
payload steady until then.

cocotb 2.x (Verilator benches)
    :class:`StreamDriver` sends a list of payloads into a design, :class:`StreamMonitor`
    receives payloads from it. Both insert random idle cycles with probability
    ``stall_prob`` per cycle (``valid`` low before each transfer for the driver, ``ready``
    low for the monitor), so every design is tested under back-pressure and bubbles.
    Right after ``await RisingEdge(clk)`` cocotb reads the values signals had *at* the
    edge, which is exactly what decides whether a transfer happened.

Amaranth simulator
    :func:`stream_put` and :func:`stream_get` move one payload (optionally after random
    stall cycles); :func:`stream_send` and :func:`stream_recv` move many.

Payloads are raw unsigned integers of the payload's width unless ``signed=True``;
:func:`signed_field` pulls a two's-complement field out of a raw struct payload.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = [
    "StreamDriver",
    "StreamMonitor",
    "clock_and_reset",
    "signed_field",
    "stream_get",
    "stream_put",
    "stream_recv",
    "stream_send",
    "unsigned_field",
]


def unsigned_field(raw: int, lsb: int, width: int) -> int:
    """Bits ``lsb .. lsb+width-1`` of ``raw`` as an unsigned integer."""
    return (raw >> lsb) & ((1 << width) - 1)


def signed_field(raw: int, lsb: int, width: int) -> int:
    """Bits ``lsb .. lsb+width-1`` of ``raw`` read as a two's-complement integer."""
    value = unsigned_field(raw, lsb, width)
    return value - (1 << width) if value >> (width - 1) else value


def _check_stall_prob(stall_prob: float) -> float:
    if not 0.0 <= stall_prob < 1.0:
        raise ValueError(f"stall_prob must be in [0, 1), not {stall_prob!r}")
    return stall_prob


def _stalls(rng: np.random.Generator, stall_prob: float) -> int:
    """Number of idle cycles before the next transfer: geometric, mean p/(1-p) cycles."""
    if stall_prob == 0.0:
        return 0
    return int(rng.geometric(1.0 - stall_prob)) - 1


# --------------------------------------------------------------------------------------
# cocotb


async def clock_and_reset(clk: Any, rst: Any | None = None, *, period_ns: int = 10,
                          reset_cycles: int = 2) -> None:
    """Start a clock of ``period_ns`` nanoseconds on ``clk`` and hold the (synchronous,
    active-high, Amaranth's ``rst``) reset for ``reset_cycles`` rising edges."""
    import cocotb
    from cocotb.clock import Clock
    from cocotb.triggers import RisingEdge

    cocotb.start_soon(Clock(clk, period_ns, unit="ns").start())
    if rst is not None:
        rst.value = 1
        for _ in range(reset_cycles):
            await RisingEdge(clk)
        rst.value = 0


class StreamDriver:
    """Drives payloads into a design's stream input (cocotb).

    Arguments:
        clk, valid, ready, payload: cocotb handles of the stream's signals.
        stall_prob: probability, each cycle, that ``valid`` stays low before the next
            payload (0 = back-to-back).
        rng: random generator of the stalls (default: seeded with 0).
        signed: payloads may be negative; they are written in two's complement.
    """

    def __init__(self, clk: Any, valid: Any, ready: Any, payload: Any, *,
                 stall_prob: float = 0.0, rng: np.random.Generator | None = None,
                 signed: bool = False) -> None:
        self.clk, self.valid, self.ready, self.payload = clk, valid, ready, payload
        self.stall_prob = _check_stall_prob(stall_prob)
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.signed = signed
        self.width = len(payload)
        self.valid.value = 0

    def _raw(self, value: int) -> int:
        low, high = (-(1 << (self.width - 1)), (1 << (self.width - 1)) - 1) if self.signed \
            else (0, (1 << self.width) - 1)
        if not low <= value <= high:
            raise ValueError(f"payload {value} does not fit {self.width} bits "
                             f"({'signed' if self.signed else 'unsigned'})")
        return value & ((1 << self.width) - 1)

    async def send(self, values: Iterable[int]) -> None:
        """Send every value in order; returns after the last one was accepted."""
        from cocotb.triggers import RisingEdge

        for value in values:
            raw = self._raw(int(value))
            for _ in range(_stalls(self.rng, self.stall_prob)):
                self.valid.value = 0
                await RisingEdge(self.clk)
            self.payload.value = raw
            self.valid.value = 1
            await RisingEdge(self.clk)
            while not self.ready.value:
                await RisingEdge(self.clk)
        self.valid.value = 0


class StreamMonitor:
    """Receives payloads from a design's stream output (cocotb).

    Arguments:
        clk, valid, ready, payload: cocotb handles of the stream's signals.
        stall_prob: probability, each cycle, that ``ready`` is low (0 = always ready
            while receiving).
        rng: random generator of the stalls (default: seeded with 1).
        signed: return payloads as two's-complement integers.
    """

    def __init__(self, clk: Any, valid: Any, ready: Any, payload: Any, *,
                 stall_prob: float = 0.0, rng: np.random.Generator | None = None,
                 signed: bool = False) -> None:
        self.clk, self.valid, self.ready, self.payload = clk, valid, ready, payload
        self.stall_prob = _check_stall_prob(stall_prob)
        self.rng = rng if rng is not None else np.random.default_rng(1)
        self.signed = signed
        self.ready.value = 0

    async def recv(self, count: int) -> list[int]:
        """Receive ``count`` payloads; ``ready`` is low again when this returns."""
        from cocotb.triggers import RisingEdge

        received: list[int] = []
        while len(received) < count:
            ready = self.stall_prob == 0.0 or self.rng.random() >= self.stall_prob
            self.ready.value = int(ready)
            await RisingEdge(self.clk)
            if ready and self.valid.value:
                value = self.payload.value
                received.append(value.to_signed() if self.signed else value.to_unsigned())
        self.ready.value = 0
        return received


# --------------------------------------------------------------------------------------
# Amaranth simulator


def _idle_cycles(stall_prob: float, rng: np.random.Generator | None) -> int:
    if _check_stall_prob(stall_prob) == 0.0:
        return 0
    if rng is None:
        # A generator made here would repeat the same stall pattern on every call.
        raise ValueError("stall_prob > 0 needs rng (a numpy Generator shared by the calls)")
    return _stalls(rng, stall_prob)


async def stream_put(ctx: Any, stream: Any, value: Any, *, stall_prob: float = 0.0,
                     rng: np.random.Generator | None = None) -> None:
    """Send one payload into ``stream`` (an ``amaranth.lib.stream`` interface) from an
    Amaranth testbench, after a random number of idle cycles when ``stall_prob > 0``."""
    idle = _idle_cycles(stall_prob, rng)
    if idle:
        await ctx.tick().repeat(idle)
    ctx.set(stream.payload, value)
    ctx.set(stream.valid, 1)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx: Any, stream: Any, *, stall_prob: float = 0.0,
                     rng: np.random.Generator | None = None) -> Any:
    """Receive one payload from ``stream`` in an Amaranth testbench, holding ``ready`` low
    for a random number of cycles first when ``stall_prob > 0``. Returns the payload as
    ``ctx.get`` would (an int, or a view for shaped payloads)."""
    idle = _idle_cycles(stall_prob, rng)
    if idle:
        await ctx.tick().repeat(idle)
    ctx.set(stream.ready, 1)
    (payload,) = await ctx.tick().sample(stream.payload).until(stream.valid)
    ctx.set(stream.ready, 0)
    return payload


async def stream_send(ctx: Any, stream: Any, values: Iterable[Any], *,
                      stall_prob: float = 0.0, rng: np.random.Generator | None = None) -> None:
    """:func:`stream_put` every value in order."""
    for value in values:
        await stream_put(ctx, stream, value, stall_prob=stall_prob, rng=rng)


async def stream_recv(ctx: Any, stream: Any, count: int, *, stall_prob: float = 0.0,
                      rng: np.random.Generator | None = None) -> list[Any]:
    """:func:`stream_get` ``count`` payloads."""
    return [await stream_get(ctx, stream, stall_prob=stall_prob, rng=rng)
            for _ in range(count)]
