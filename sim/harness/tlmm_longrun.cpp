// Long-run harness of the ternary table-lookup engine: all stimulus lives in the simulation.
//
// Usage: V@TOP@ stimulus.bin outputs.bin stall_prob seed
//
// stimulus.bin (little-endian uint32): header {n_cmd, cmd_words, n_act, act_words, n_weights,
// weight_words, n_out, out_words}, then the cmd, act and weight beats (each beat `*_words`
// words, word 0 least significant; trilobit.sim.golden_tlmm.pack_beats). The harness drives
// the three input streams and takes the output stream with random stalls (probability
// stall_prob per cycle and stream), writes the n_out output beats to outputs.bin and prints
// {"cycles": ..., "seconds": ...} on stdout. Python compares the outputs with the golden model.
#include "V@TOP@.h"
#include "verilated.h"

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

// Payload ports are CData/SData/IData (<= 32 bits), QData (<= 64) or VlWide<N>.
static void put(CData& port, const uint32_t* w) { port = static_cast<CData>(w[0]); }
static void put(SData& port, const uint32_t* w) { port = static_cast<SData>(w[0]); }
static void put(IData& port, const uint32_t* w) { port = w[0]; }
static void put(QData& port, const uint32_t* w) { port = w[0] | (static_cast<QData>(w[1]) << 32); }
template <std::size_t N> static void put(VlWide<N>& port, const uint32_t* w) {
    for (std::size_t i = 0; i < N; ++i) port[i] = w[i];
}
static void get(const CData& port, uint32_t* w) { w[0] = port; }
static void get(const SData& port, uint32_t* w) { w[0] = port; }
static void get(const IData& port, uint32_t* w) { w[0] = port; }
static void get(const QData& port, uint32_t* w) {
    w[0] = static_cast<uint32_t>(port);
    w[1] = static_cast<uint32_t>(port >> 32);
}
template <std::size_t N> static void get(const VlWide<N>& port, uint32_t* w) {
    for (std::size_t i = 0; i < N; ++i) w[i] = port[i];
}

// xorshift64*: a fixed, fast stall pattern independent of the C++ library.
struct Random {
    uint64_t state;
    double next() {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        return static_cast<double>((state * 2685821657736338717ULL) >> 11) * (1.0 / 9007199254740992.0);
    }
};

struct Source {
    const uint32_t* beats;
    uint32_t count, words, next = 0;
    bool valid = false;
};

int main(int argc, char** argv) {
    if (argc != 5) {
        std::fprintf(stderr, "usage: %s stimulus.bin outputs.bin stall_prob seed\n", argv[0]);
        return 2;
    }
    FILE* in = std::fopen(argv[1], "rb");
    if (!in) { std::perror(argv[1]); return 2; }
    uint32_t header[8];
    if (std::fread(header, 4, 8, in) != 8) { std::fprintf(stderr, "short header\n"); return 2; }
    std::size_t total = static_cast<std::size_t>(header[0]) * header[1] +
                        static_cast<std::size_t>(header[2]) * header[3] +
                        static_cast<std::size_t>(header[4]) * header[5];
    std::vector<uint32_t> data(total);
    if (std::fread(data.data(), 4, total, in) != total) { std::fprintf(stderr, "short data\n"); return 2; }
    std::fclose(in);
    const double stall = std::atof(argv[3]);
    Random random{static_cast<uint64_t>(std::atoll(argv[4])) * 0x9E3779B97F4A7C15ULL + 1};

    Source cmd{data.data(), header[0], header[1]};
    Source act{cmd.beats + static_cast<std::size_t>(header[0]) * header[1], header[2], header[3]};
    Source wts{act.beats + static_cast<std::size_t>(header[2]) * header[3], header[4], header[5]};
    const uint32_t n_out = header[6], out_words = header[7];
    std::vector<uint32_t> outputs(static_cast<std::size_t>(n_out) * out_words);
    uint32_t received = 0;

    VerilatedContext context;
    V@TOP@ top(&context);
    top.clk = 0;
    top.rst = 1;
    for (int i = 0; i < 4; ++i) { top.clk = !top.clk; top.eval(); }
    top.rst = 0;

    const uint64_t max_cycles = 64ULL * (header[4] + header[2] + n_out) + 1000;
    uint64_t cycles = 0;
    auto start = std::chrono::steady_clock::now();
    while (received < n_out && cycles < max_cycles) {
        // Offer the next beat of each input stream unless this cycle stalls it.
        for (Source* s : {&cmd, &act, &wts}) {
            if (!s->valid && s->next < s->count && (stall == 0.0 || random.next() >= stall)) s->valid = true;
        }
        if (cmd.valid) put(top.cmd___05Fpayload, cmd.beats + static_cast<std::size_t>(cmd.next) * cmd.words);
        if (act.valid) put(top.act___05Fpayload, act.beats + static_cast<std::size_t>(act.next) * act.words);
        if (wts.valid) put(top.weights___05Fpayload, wts.beats + static_cast<std::size_t>(wts.next) * wts.words);
        top.cmd___05Fvalid = cmd.valid;
        top.act___05Fvalid = act.valid;
        top.weights___05Fvalid = wts.valid;
        const bool out_ready = stall == 0.0 || random.next() >= stall;
        top.out___05Fready = out_ready;
        top.clk = 0;
        top.eval();
        // Transfers happen at the coming rising edge: sample the handshakes before it.
        const bool cmd_fire = cmd.valid && top.cmd___05Fready;
        const bool act_fire = act.valid && top.act___05Fready;
        const bool wts_fire = wts.valid && top.weights___05Fready;
        if (out_ready && top.out___05Fvalid) {
            get(top.out___05Fpayload, outputs.data() + static_cast<std::size_t>(received) * out_words);
            ++received;
        }
        top.clk = 1;
        top.eval();
        ++cycles;
        if (cmd_fire) { cmd.valid = false; ++cmd.next; }
        if (act_fire) { act.valid = false; ++act.next; }
        if (wts_fire) { wts.valid = false; ++wts.next; }
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    top.final();
    FILE* out = std::fopen(argv[2], "wb");
    if (!out) { std::perror(argv[2]); return 2; }
    std::fwrite(outputs.data(), 4, outputs.size(), out);
    std::fclose(out);
    std::printf("{\"cycles\": %llu, \"seconds\": %.6f, \"received\": %u}\n",
                static_cast<unsigned long long>(cycles), seconds, received);
    return received == n_out ? 0 : 1;
}
