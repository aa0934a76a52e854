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
// Cost per simulated cycle: two eval() calls (clock high, clock low). Verilator re-evaluates
// all logic fed by top-level inputs on every eval() (its "ico" region), and all logic fed by
// registers on every rising edge; the memory model and the stall generator are negligible
// next to that (docs/accelerator.md, "Simulation speed").
#include "V@TOP@.h"
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

static void put(IData& port, const uint8_t* b) { std::memcpy(&port, b, 4); }
static void put(QData& port, const uint8_t* b) { std::memcpy(&port, b, 8); }
template <std::size_t N> static void put(VlWide<N>& port, const uint8_t* b) {
    for (std::size_t i = 0; i < N; ++i) std::memcpy(&port[i], b + 4 * i, 4);
}
static void get(const IData& port, uint8_t* b) { std::memcpy(b, &port, 4); }
static void get(const QData& port, uint8_t* b) { std::memcpy(b, &port, 8); }
template <std::size_t N> static void get(const VlWide<N>& port, uint8_t* b) {
    for (std::size_t i = 0; i < N; ++i) std::memcpy(b + 4 * i, &port[i], 4);
}

struct Random {  // xorshift64*: a fixed stall pattern independent of the C++ library
    uint64_t state;
    double next() {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        return static_cast<double>((state * 2685821657736338717ULL) >> 11) * (1.0 / 9007199254740992.0);
    }
};

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
        // Inputs were set while clk is low; Verilator settles logic fed by changed inputs
        // before it runs the clock edge of the same eval, so two evals make a cycle.
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
    // Evaluate with the inputs just set, return `ready`, then clock: one handshake cycle.
    template <typename T> bool handshake(const T& ready) {
        top->eval();
        bool done = ready;
        tick();
        return done;
    }
    uint32_t csr(uint32_t offset, bool write, uint32_t value) {
#if BUS_AXI
        uint32_t data = 0;
        if (write) {
            top->s_axil_awaddr = offset;
            top->s_axil_wdata = value;
            top->s_axil_wstrb = 0xF;
            top->s_axil_awvalid = 1;
            top->s_axil_wvalid = 1;
            while (!handshake(top->s_axil_awready)) {}
            top->s_axil_awvalid = 0;
            top->s_axil_wvalid = 0;
            top->s_axil_bready = 1;
            while (!handshake(top->s_axil_bvalid)) {}
            top->s_axil_bready = 0;
        } else {
            top->s_axil_araddr = offset;
            top->s_axil_arvalid = 1;
            while (!handshake(top->s_axil_arready)) {}
            top->s_axil_arvalid = 0;
            top->s_axil_rready = 1;
            for (;;) {
                top->eval();
                if (top->s_axil_rvalid) { data = top->s_axil_rdata; tick(); break; }
                tick();
            }
            top->s_axil_rready = 0;
        }
        return data;
#else
        top->csr_cyc = 1;
        top->csr_stb = 1;
        top->csr_we = write;
        top->csr_adr = offset >> 2;
        top->csr_dat_w = value;
        do tick(); while (!top->csr_ack);
        uint32_t data = top->csr_dat_r;
        top->csr_cyc = 0;
        top->csr_stb = 0;
        top->csr_we = 0;
        tick();
        return data;
#endif
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
    std::vector<uint8_t> memory;
    {
        uint8_t chunk[65536];
        std::size_t n;
        while ((n = std::fread(chunk, 1, sizeof chunk, f)) > 0) memory.insert(memory.end(), chunk, chunk + n);
        std::fclose(f);
    }
    const uint32_t prog_base = std::strtoul(argv[3], nullptr, 0);
    const uint32_t data_base = std::strtoul(argv[4], nullptr, 0);
    const uint64_t win_base = std::strtoull(argv[5], nullptr, 0);
    const uint64_t win_limit = std::strtoull(argv[6], nullptr, 0);
    const uint32_t watchdog = std::strtoul(argv[7], nullptr, 0);
    const double stall_prob = std::atof(argv[8]);
    Random rng{std::strtoull(argv[9], nullptr, 0) * 2 + 1};
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
    h.csr(TRILOBIT_CSR_WIN_BASE, true, static_cast<uint32_t>(win_base));
    h.csr(TRILOBIT_CSR_WIN_LIMIT, true, static_cast<uint32_t>(win_limit));
    h.csr(TRILOBIT_CSR_WATCHDOG, true, watchdog);
    h.csr(TRILOBIT_CSR_CTRL, true, 0x3);  // start, interrupt enabled

    uint64_t outside = 0, beyond_memory = 0;
    const uint64_t start_cycle = h.cycles;
    auto t0 = std::chrono::steady_clock::now();
    const std::clock_t cpu0 = std::clock();
#if BUS_AXI
    // AXI4 slave: one read and one write in flight; every ready and every new valid is
    // withheld with probability stall_prob; a valid, once raised, stays until its handshake.
    bool reading = false, r_valid = false, have_aw = false, have_w = false, b_valid = false;
    uint64_t r_addr = 0, w_addr = 0;
    uint8_t w_data[LINE_BYTES];
    auto inside = [&](uint64_t a) {
        if (a < win_base || a + LINE_BYTES > win_limit) ++outside;
        if (a + LINE_BYTES > memory.size()) { ++beyond_memory; return false; }
        return true;
    };
    while (!top.irq && h.cycles - start_cycle < max_cycles) {
        // The outputs are settled: the clock-low eval of the last tick saw these inputs.
        top.m_axi_arready = !reading && rng.next() >= stall_prob;
        if (reading && !r_valid && rng.next() >= stall_prob) {
            r_valid = true;
            uint8_t zero[LINE_BYTES] = {0};
            put(top.m_axi_rdata, r_addr + LINE_BYTES <= memory.size() ? &memory[r_addr] : zero);
        }
        top.m_axi_rvalid = r_valid;
        top.m_axi_rresp = 0;
        top.m_axi_rlast = 1;
        top.m_axi_awready = !have_aw && rng.next() >= stall_prob;
        top.m_axi_wready = !have_w && rng.next() >= stall_prob;
        if (have_aw && have_w && !b_valid && rng.next() >= stall_prob) {
            if (inside(w_addr)) std::memcpy(&memory[w_addr], w_data, LINE_BYTES);
            b_valid = true;
        }
        top.m_axi_bvalid = b_valid;
        top.m_axi_bresp = 0;
        // AXI lets a ready depend on the valid it answers: settle before sampling handshakes.
        top.eval();
        const bool ar = top.m_axi_arvalid && top.m_axi_arready;
        const bool r = top.m_axi_rvalid && top.m_axi_rready;
        const bool aw = top.m_axi_awvalid && top.m_axi_awready;
        const bool w = top.m_axi_wvalid && top.m_axi_wready;
        const bool b = top.m_axi_bvalid && top.m_axi_bready;
        if (ar) { reading = true; r_addr = top.m_axi_araddr; inside(r_addr); }
        if (aw) { have_aw = true; w_addr = top.m_axi_awaddr; }
        if (w) { have_w = true; get(top.m_axi_wdata, w_data); }
        if (r) { reading = false; r_valid = false; }
        if (b) { have_aw = have_w = b_valid = false; }
        h.tick();
    }
    top.m_axi_arready = top.m_axi_awready = top.m_axi_wready = 0;
    top.m_axi_rvalid = top.m_axi_bvalid = 0;
#else
    while (!top.irq && h.cycles - start_cycle < max_cycles) {
        top.mem_ack = 0;
        if (top.mem_cyc && top.mem_stb && rng.next() >= stall_prob) {
            const uint64_t address = static_cast<uint64_t>(top.mem_adr) * LINE_BYTES;
            top.mem_ack = 1;
            if (address < win_base || address + LINE_BYTES > win_limit) ++outside;
            if (address + LINE_BYTES > memory.size()) {
                ++beyond_memory;
                uint8_t zero[LINE_BYTES] = {0};
                put(top.mem_dat_r, zero);
            } else if (top.mem_we) {
                get(top.mem_dat_w, &memory[address]);
            } else {
                put(top.mem_dat_r, &memory[address]);
            }
        }
        h.tick();
    }
    top.mem_ack = 0;
#endif
    const uint64_t run_cycles = h.cycles - start_cycle;
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    double cpu_seconds = static_cast<double>(std::clock() - cpu0) / CLOCKS_PER_SEC;

    const uint32_t status = h.csr(TRILOBIT_CSR_STATUS, false, 0);
    std::printf("status %u\n", status);
    std::printf("error_pc %u\n", h.csr(TRILOBIT_CSR_ERROR_PC, false, 0));
    std::printf("id %u\n", h.csr(TRILOBIT_CSR_ID, false, 0));
    for (const auto& c : COUNTER_TABLE) std::printf("%s %u\n", c.name, h.csr(c.offset, false, 0));
    std::printf("bus_outside_window %llu\n", static_cast<unsigned long long>(outside));
    std::printf("bus_beyond_memory %llu\n", static_cast<unsigned long long>(beyond_memory));
    std::printf("sim_cycles %llu\n", static_cast<unsigned long long>(run_cycles));
    std::printf("seconds %.6f\n", seconds);
    std::printf("cpu_seconds %.6f\n", cpu_seconds);
#if VM_TRACE
    if (h.trace) h.trace->close();
#endif
    h.top->final();
    std::FILE* o = std::fopen(argv[2], "wb");
    if (!o) { std::perror(argv[2]); return 2; }
    std::fwrite(memory.data(), 1, memory.size(), o);
    std::fclose(o);
    return 0;
}
