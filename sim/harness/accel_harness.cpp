// Whole-program harness of the accelerator: the external memory lives in the simulation.
//
// Usage: V@TOP@ memory.bin memory_out.bin prog_base data_base win_base win_limit watchdog
//               stall_prob seed max_cycles [waves_file]
//
// memory.bin is the initial external memory image. The harness writes the CSRs (Wishbone,
// or AXI4-Lite when BUS_AXI), starts the run, and answers the data master from the image:
// Wishbone holds `ack` low with probability stall_prob on every cycle of a transfer; AXI4
// withholds every ready and every response valid with that probability. When `irq`
// rises (or after max_cycles) it reads STATUS, ERROR_PC and every counter, prints them as
// `name value` lines on stdout, with `bus_outside_window` (transfers the master issued
// outside [win_base, win_limit): must be 0), `sim_cycles`, `seconds` (wall time of the run
// loop) and `cpu_seconds` (processor time this process spent in it: the figure to compare
// when the machine is shared), and writes the final memory image to memory_out.bin.
//
// The simulated top is accel_sim.sv: the core plus the bus side of the memory, which calls
// the DPI-C functions below on every rising edge. During a run `clk` is the only input that
// changes, so a simulated cycle is the logic fed by registers, evaluated once on the rising
// edge (docs/accelerator.md, "Simulation speed"). The CSR bus and `rst` inputs reach the
// core through a register each: the CSR master below sets them one cycle ahead.
#include "V@TOP@.h"
#include "V@TOP@__Dpi.h"
#include "verilated.h"
#if VM_TRACE_VCD
#include "verilated_vcd_c.h"
#endif
#if VM_TRACE_FST
#include "verilated_fst_c.h"
#endif

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <vector>

@DEFINES@

struct Random {  // xorshift64*: a fixed stall pattern independent of the C++ library
    uint64_t state;
    double next() {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        return static_cast<double>((state * 2685821657736338717ULL) >> 11) * (1.0 / 9007199254740992.0);
    }
};

// The external memory and the bus slave's state; reached from the model through DPI-C.
struct Memory {
    std::vector<uint8_t> bytes;
    uint64_t win_base = 0, win_limit = 0;
    double stall_prob = 0;
    Random rng{1};
    bool serving = false;  // the run is on: the slave answers (before and after: it never does)
    uint64_t outside = 0, beyond_memory = 0;

    bool no_stall() { return rng.next() >= stall_prob; }
    // Counts a transfer of the line at `address`; false when the line lies beyond the memory.
    bool transfer(uint64_t address) {
        if (address < win_base || address + LINE_BYTES > win_limit) ++outside;
        if (address + LINE_BYTES > bytes.size()) { ++beyond_memory; return false; }
        return true;
    }

    // Wishbone: a stall decision is drawn when the previous one was used by a request.
    bool decision = false, drawn = false;

    // AXI4: one read and one write in flight; every ready and every new valid is withheld
    // with probability stall_prob; a valid, once raised, stays until its handshake.
    bool reading = false, r_valid = false, have_aw = false, have_w = false, b_valid = false;
    uint64_t r_addr = 0, w_addr = 0;
    uint8_t r_data[LINE_BYTES] = {0}, w_data[LINE_BYTES] = {0};
};
static Memory memory;

static void to_words(svBitVecVal* words, const uint8_t* b) { std::memcpy(words, b, LINE_BYTES); }
static void from_words(uint8_t* b, const svBitVecVal* words) { std::memcpy(b, words, LINE_BYTES); }

#if BUS_AXI
void axi_memory_edge(svBit ar, uint32_t araddr, svBit r, svBit aw, uint32_t awaddr, svBit w,
                     const svBitVecVal* wdata, svBit b, svBit* arready, svBit* rvalid,
                     svBitVecVal* rdata, svBit* awready, svBit* wready, svBit* bvalid) {
    Memory& m = memory;
    if (m.serving) {
        // The handshakes of the cycle that ends.
        if (ar) { m.reading = true; m.r_addr = araddr; m.transfer(araddr); }
        if (aw) { m.have_aw = true; m.w_addr = awaddr; }
        if (w) { m.have_w = true; from_words(m.w_data, wdata); }
        if (r) { m.reading = false; m.r_valid = false; }
        if (b) { m.have_aw = m.have_w = m.b_valid = false; }
        // The next cycle, with the random numbers drawn in this order.
        *arready = !m.reading && m.no_stall();
        if (m.reading && !m.r_valid && m.no_stall()) {
            m.r_valid = true;
            if (m.r_addr + LINE_BYTES <= m.bytes.size()) std::memcpy(m.r_data, &m.bytes[m.r_addr], LINE_BYTES);
            else std::memset(m.r_data, 0, LINE_BYTES);
        }
        *rvalid = m.r_valid;
        *awready = !m.have_aw && m.no_stall();
        *wready = !m.have_w && m.no_stall();
        if (m.have_aw && m.have_w && !m.b_valid && m.no_stall()) {
            if (m.transfer(m.w_addr)) std::memcpy(&m.bytes[m.w_addr], m.w_data, LINE_BYTES);
            m.b_valid = true;
        }
        *bvalid = m.b_valid;
    } else {
        *arready = *rvalid = *awready = *wready = *bvalid = 0;
    }
    to_words(rdata, m.r_data);
}
#else
svBit wishbone_memory_edge(svBit request, svBit ack, svBit we, uint32_t adr,
                           const svBitVecVal* dat_w) {
    Memory& m = memory;
    if (!m.serving) return m.decision = m.drawn = false;
    if (ack) {
        const uint64_t address = static_cast<uint64_t>(adr) * LINE_BYTES;
        if (m.transfer(address) && we) from_words(&m.bytes[address], dat_w);
    }
    if (request || !m.drawn) {
        m.decision = m.no_stall();
        m.drawn = true;
    }
    return m.decision;
}

void wishbone_memory_read(uint32_t adr, svBitVecVal* dat_r) {
    const uint64_t address = static_cast<uint64_t>(adr) * LINE_BYTES;
    static const uint8_t zero[LINE_BYTES] = {0};
    to_words(dat_r, address + LINE_BYTES <= memory.bytes.size() ? &memory.bytes[address] : zero);
}
#endif

struct Harness {
    std::unique_ptr<V@TOP@> top{new V@TOP@};
    uint64_t cycles = 0;
#if VM_TRACE
#if VM_TRACE_FST
    std::unique_ptr<VerilatedFstC> trace;
#else
    std::unique_ptr<VerilatedVcdC> trace;
#endif
#endif
    void tick() {
        top->clk = 1;
        top->eval();
#if VM_TRACE
        if (trace) trace->dump(2 * cycles + 1);
#endif
        top->clk = 0;
        top->eval();
#if VM_TRACE
        if (trace) trace->dump(2 * cycles + 2);
#endif
        ++cycles;
    }
    // Raise `valid` from the next cycle on until the cycle `ready` is seen, then lower it
    // again for the cycle after (the core sees `valid` through a register).
    template <typename T> void handshake(uint8_t& valid, const T& ready) {
        valid = 1;
        tick();
        while (!ready) tick();
        valid = 0;
    }
    // One CSR access. The memory starts serving from the cycle after the access when
    // `then_serve` (the START write): the cycle the run loop begins with.
    uint32_t csr(uint32_t offset, bool write, uint32_t value, bool then_serve = false) {
        uint32_t data = 0;
#if BUS_AXI
        if (write) {
            top->s_axil_awaddr = offset;
            top->s_axil_wdata = value;
            top->s_axil_wstrb = 0xF;
            top->s_axil_awvalid = 1;  // both together: the adapter takes them in one cycle
            handshake(top->s_axil_wvalid, top->s_axil_awready);
            top->s_axil_awvalid = 0;
            handshake(top->s_axil_bready, top->s_axil_bvalid);
        } else {
            top->s_axil_araddr = offset;
            handshake(top->s_axil_arvalid, top->s_axil_arready);
            handshake(top->s_axil_rready, top->s_axil_rvalid);
            data = top->s_axil_rdata;
        }
#else
        top->csr_we = write;
        top->csr_adr = offset >> 2;
        top->csr_dat_w = value;
        top->csr_stb = 1;
        handshake(top->csr_cyc, top->csr_ack);
        top->csr_stb = 0;
        top->csr_we = 0;
        data = top->csr_dat_r;
#endif
        memory.serving |= then_serve;
        tick();
        return data;
    }
};

int main(int argc, char** argv) {
    if (argc != 11 && argc != 12) {
        std::fprintf(stderr, "usage: %s memory.bin memory_out.bin prog_base data_base win_base "
                             "win_limit watchdog stall_prob seed max_cycles [waves]\n", argv[0]);
        return 2;
    }
    std::FILE* f = std::fopen(argv[1], "rb");
    if (!f) { std::perror(argv[1]); return 2; }
    {
        uint8_t chunk[65536];
        std::size_t n;
        while ((n = std::fread(chunk, 1, sizeof chunk, f)) > 0)
            memory.bytes.insert(memory.bytes.end(), chunk, chunk + n);
        std::fclose(f);
    }
    const uint32_t prog_base = std::strtoul(argv[3], nullptr, 0);
    const uint32_t data_base = std::strtoul(argv[4], nullptr, 0);
    memory.win_base = std::strtoull(argv[5], nullptr, 0);
    memory.win_limit = std::strtoull(argv[6], nullptr, 0);
    const uint32_t watchdog = std::strtoul(argv[7], nullptr, 0);
    memory.stall_prob = std::atof(argv[8]);
    memory.rng = Random{std::strtoull(argv[9], nullptr, 0) * 2 + 1};
    const uint64_t max_cycles = std::strtoull(argv[10], nullptr, 0);

    Verilated::commandArgs(1, argv);
    Harness h;
#if VM_TRACE
    if (argc == 12) {
        Verilated::traceEverOn(true);
#if VM_TRACE_FST
        h.trace.reset(new VerilatedFstC);
#else
        h.trace.reset(new VerilatedVcdC);
#endif
        h.top->trace(h.trace.get(), 99);
        h.trace->open(argv[11]);
    }
#endif
    V@TOP@& top = *h.top;
    top.clk = 0;
    top.rst = 1;
    h.tick();
    h.tick();
    top.rst = 0;
    h.tick();

    h.csr(TRILOBIT_CSR_PROG_BASE, true, prog_base);
    h.csr(TRILOBIT_CSR_DATA_BASE, true, data_base);
    h.csr(TRILOBIT_CSR_WIN_BASE, true, static_cast<uint32_t>(memory.win_base));
    h.csr(TRILOBIT_CSR_WIN_LIMIT, true, static_cast<uint32_t>(memory.win_limit));
    h.csr(TRILOBIT_CSR_WATCHDOG, true, watchdog);
    h.csr(TRILOBIT_CSR_CTRL, true, 0x3, true);  // start, interrupt enabled

    const uint64_t start_cycle = h.cycles;
    auto t0 = std::chrono::steady_clock::now();
    const std::clock_t cpu0 = std::clock();
    while (!top.irq && h.cycles - start_cycle < max_cycles) h.tick();
    memory.serving = false;
    const uint64_t run_cycles = h.cycles - start_cycle;
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    double cpu_seconds = static_cast<double>(std::clock() - cpu0) / CLOCKS_PER_SEC;

    const uint32_t status = h.csr(TRILOBIT_CSR_STATUS, false, 0);
    std::printf("status %u\n", status);
    std::printf("error_pc %u\n", h.csr(TRILOBIT_CSR_ERROR_PC, false, 0));
    std::printf("id %u\n", h.csr(TRILOBIT_CSR_ID, false, 0));
    for (const auto& c : COUNTER_TABLE) std::printf("%s %u\n", c.name, h.csr(c.offset, false, 0));
    std::printf("bus_outside_window %llu\n", static_cast<unsigned long long>(memory.outside));
    std::printf("bus_beyond_memory %llu\n", static_cast<unsigned long long>(memory.beyond_memory));
    std::printf("sim_cycles %llu\n", static_cast<unsigned long long>(run_cycles));
    std::printf("seconds %.6f\n", seconds);
    std::printf("cpu_seconds %.6f\n", cpu_seconds);
#if VM_TRACE
    if (h.trace) h.trace->close();
#endif
    h.top->final();
    std::FILE* o = std::fopen(argv[2], "wb");
    if (!o) { std::perror(argv[2]); return 2; }
    std::fwrite(memory.bytes.data(), 1, memory.bytes.size(), o);
    std::fclose(o);
    return 0;
}
