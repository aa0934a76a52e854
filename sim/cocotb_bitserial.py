"""cocotb 2.x benches of the bit-serial engine, its baseline and the self-checking wrapper.

Run through :func:`trilobit.sim.toolchain.run_cocotb` with ``params``:

``bitserial_streams`` (top: ``BitSerialEngine`` or ``BitParallelMacArray``)
    ``params = {"engine": BitSerialParams.as_dict(), "words": path of a JSON file with the
    stream payloads (:func:`trilobit.sim.golden_bitserial.job_stream_words`), "stall_prob":
    p}``. Drives ``meta``, ``act`` and ``weights`` concurrently with random valid stalls,
    receives ``out`` with random ready stalls and compares every beat bit for bit.

``bitserial_selfcheck`` (top: :class:`~trilobit.hw.bitserial_selfcheck.SelfCheckingEngine`)
    ``params = {"outputs": expected beat count, "max_cycles": n}``. Waits for ``done``
    (stimulus and checking run inside the design) and requires ``errors == 0``; writes
    ``cycles`` to the file named by ``params["report"]`` when given.
"""

from __future__ import annotations

import json
from pathlib import Path

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, RisingEdge

from trilobit.sim.streams import StreamDriver, StreamMonitor, clock_and_reset
from trilobit.sim.toolchain import test_params


def _params_of(engine: dict):
    from trilobit.hw.bitserial import BitSerialParams

    fields = {k: v for k, v in engine.items() if k not in ("psum_bits", "acc_bits")}
    return BitSerialParams(**fields)


class EngineBench:
    """Clock, reset, three stream drivers and the output monitor of one engine."""

    def __init__(self, dut, stall_prob: float, seed: int = 0):
        self.dut = dut
        rngs = np.random.default_rng(seed).spawn(4)
        self.drivers = {
            name: StreamDriver(dut.clk, getattr(dut, f"{name}__valid"),
                               getattr(dut, f"{name}__ready"), getattr(dut, f"{name}__payload"),
                               stall_prob=stall_prob, rng=rng)
            for name, rng in zip(("meta", "act", "weights"), rngs, strict=False)
        }
        self.monitor = StreamMonitor(dut.clk, dut.out__valid, dut.out__ready, dut.out__payload,
                                     stall_prob=stall_prob, rng=rngs[3])

    async def reset(self) -> None:
        await clock_and_reset(self.dut.clk, self.dut.rst)


@cocotb.test()
async def bitserial_streams(dut):
    """Every output beat equals the golden model's, under random stalls on all streams."""
    params = test_params()
    engine = _params_of(params["engine"])
    words = json.loads(Path(params["words"]).read_text())
    bench = EngineBench(dut, params.get("stall_prob", 0.3), params.get("seed", 0))
    await bench.reset()
    for name in ("meta", "act", "weights"):
        cocotb.start_soon(bench.drivers[name].send(words[name]))
    got = await bench.monitor.recv(len(words["expected"]))
    for i, (raw, want) in enumerate(zip(got, words["expected"], strict=True)):
        assert raw == want, (
            f"job {i}: got {engine.unpack_out(raw)}, expected {engine.unpack_out(want)}"
        )
    # nothing more may come out
    await ClockCycles(dut.clk, 20)
    assert not dut.out__valid.value, "engine produced an output beat nobody asked for"


@cocotb.test()
async def bitserial_selfcheck(dut):
    """Long run with stimulus and checker inside the design: wait for done, no errors."""
    params = test_params()
    await clock_and_reset(dut.clk, dut.rst)
    limit = params["max_cycles"]
    waited = 0
    while not dut.done.value:
        await ClockCycles(dut.clk, 1000)
        waited += 1000
        assert waited < limit, f"not done after {limit} cycles ({int(dut.outputs.value)} beats)"
    await RisingEdge(dut.clk)
    assert int(dut.outputs.value) == params["outputs"]
    assert int(dut.errors.value) == 0, f"{int(dut.errors.value)} output beats differ"
    if params.get("report"):
        Path(params["report"]).write_text(json.dumps({"cycles": int(dut.cycles.value)}))
