// Simulation top of the accelerator for the C++ harness (accel_harness.cpp): the core (module
// `@CORE@`), the external memory and its stall generator.
//
// All logic fed combinationally by a top-level input is evaluated again on every eval() call
// of the Verilator model (its "ico" region), twice per simulated cycle. So during a run `clk` is the only input
// that changes, and no logic depends on an input combinationally:
// * the memory and the stall generator answer the data bus from registers that DPI-C calls
//   into the harness's C++ fill on every rising edge (Wishbone: the stall decision of the next
//   request cycle; AXI4: every ready, valid and the read data of the next cycle), plus a read
//   of the line a Wishbone read is acknowledged for in the cycle it is acknowledged;
// * `rst` and the CSR bus inputs, which the harness drives only before and after a run, reach
//   the core through a register each (one cycle later than the harness sets them).
// The bus behaviour (when a transfer is stalled, what it reads and writes) is decided in C++,
// in the same order and from the same random numbers as the harness has always done.
@DEFINES@

module accel_sim (
    input wire clk,
    input wire rst,
`ifdef BUS_AXI
    input wire [6:0] s_axil_awaddr,
    input wire s_axil_awvalid,
    output wire s_axil_awready,
    input wire [31:0] s_axil_wdata,
    input wire [3:0] s_axil_wstrb,
    input wire s_axil_wvalid,
    output wire s_axil_wready,
    output wire [1:0] s_axil_bresp,
    output wire s_axil_bvalid,
    input wire s_axil_bready,
    input wire [6:0] s_axil_araddr,
    input wire s_axil_arvalid,
    output wire s_axil_arready,
    output wire [31:0] s_axil_rdata,
    output wire [1:0] s_axil_rresp,
    output wire s_axil_rvalid,
    input wire s_axil_rready,
`else
    input wire csr_cyc,
    input wire csr_stb,
    input wire csr_we,
    input wire [4:0] csr_adr,
    input wire [31:0] csr_dat_w,
    output wire [31:0] csr_dat_r,
    output wire csr_ack,
`endif
    output wire irq
);
    reg rst_q = 1'b1;
    always_ff @(posedge clk) rst_q <= rst;

`ifdef BUS_AXI
    // Completes the handshakes of the cycle that ends (the read address counts against the
    // window and the memory size; a write lands in memory when its response is raised) and
    // returns the ready and valid signals and the read data of the next cycle.
    import "DPI-C" function void axi_memory_edge(
        input bit ar, input int unsigned araddr, input bit r, input bit aw,
        input int unsigned awaddr, input bit w, input bit [`LINE_BITS-1:0] wdata, input bit b,
        output bit arready, output bit rvalid, output bit [`LINE_BITS-1:0] rdata,
        output bit awready, output bit wready, output bit bvalid);

    reg [6:0] awaddr_q = 0, araddr_q = 0;
    reg awvalid_q = 0, wvalid_q = 0, bready_q = 0, arvalid_q = 0, rready_q = 0;
    reg [31:0] wdata_q = 0;
    reg [3:0] wstrb_q = 0;
    always_ff @(posedge clk) begin
        awaddr_q <= s_axil_awaddr;
        awvalid_q <= s_axil_awvalid;
        wdata_q <= s_axil_wdata;
        wstrb_q <= s_axil_wstrb;
        wvalid_q <= s_axil_wvalid;
        bready_q <= s_axil_bready;
        araddr_q <= s_axil_araddr;
        arvalid_q <= s_axil_arvalid;
        rready_q <= s_axil_rready;
    end

    wire [31:0] araddr, awaddr;
    wire arvalid, rready, awvalid, wvalid, bready;
    wire [`LINE_BITS-1:0] wdata;
    reg arready = 0, rvalid = 0, awready = 0, wready = 0, bvalid = 0;
    reg [`LINE_BITS-1:0] rdata = 0;
    always_ff @(posedge clk) begin
        bit arready_n, rvalid_n, awready_n, wready_n, bvalid_n;
        bit [`LINE_BITS-1:0] rdata_n;
        axi_memory_edge(arvalid & arready, araddr, rvalid & rready, awvalid & awready, awaddr,
                        wvalid & wready, wdata, bvalid & bready,
                        arready_n, rvalid_n, rdata_n, awready_n, wready_n, bvalid_n);
        arready <= arready_n;
        rvalid <= rvalid_n;
        rdata <= rdata_n;
        awready <= awready_n;
        wready <= wready_n;
        bvalid <= bvalid_n;
    end

    @CORE@ core (
        .clk(clk), .rst(rst_q), .irq(irq),
        .m_axi_araddr(araddr), .m_axi_arvalid(arvalid), .m_axi_arready(arready),
        .m_axi_arlen(), .m_axi_arsize(), .m_axi_arburst(),
        .m_axi_rdata(rdata), .m_axi_rresp(2'b00), .m_axi_rlast(1'b1), .m_axi_rvalid(rvalid),
        .m_axi_rready(rready),
        .m_axi_awaddr(awaddr), .m_axi_awvalid(awvalid), .m_axi_awready(awready),
        .m_axi_awlen(), .m_axi_awsize(), .m_axi_awburst(),
        .m_axi_wdata(wdata), .m_axi_wstrb(), .m_axi_wlast(), .m_axi_wvalid(wvalid),
        .m_axi_wready(wready),
        .m_axi_bresp(2'b00), .m_axi_bvalid(bvalid), .m_axi_bready(bready),
        .s_axil_awaddr(awaddr_q), .s_axil_awvalid(awvalid_q), .s_axil_awready(s_axil_awready),
        .s_axil_wdata(wdata_q), .s_axil_wstrb(wstrb_q), .s_axil_wvalid(wvalid_q),
        .s_axil_wready(s_axil_wready), .s_axil_bresp(s_axil_bresp),
        .s_axil_bvalid(s_axil_bvalid), .s_axil_bready(bready_q),
        .s_axil_araddr(araddr_q), .s_axil_arvalid(arvalid_q), .s_axil_arready(s_axil_arready),
        .s_axil_rdata(s_axil_rdata), .s_axil_rresp(s_axil_rresp),
        .s_axil_rvalid(s_axil_rvalid), .s_axil_rready(rready_q)
    );
`else
    // Completes the transfer acknowledged in the cycle that ends (counts it against the window
    // and the memory size, writes it) and returns whether the next cycle with a request is
    // acknowledged: a new stall decision once the last one was used by a request.
    import "DPI-C" function bit wishbone_memory_edge(
        input bit request, input bit ack, input bit we, input int unsigned adr,
        input bit [`LINE_BITS-1:0] dat_w);
    // The line at `adr` (zero beyond the memory).
    import "DPI-C" function void wishbone_memory_read(
        input int unsigned adr, output bit [`LINE_BITS-1:0] dat_r);

    reg cyc_q = 0, stb_q = 0, we_q = 0;
    reg [4:0] adr_q = 0;
    reg [31:0] dat_w_q = 0;
    always_ff @(posedge clk) begin
        cyc_q <= csr_cyc;
        stb_q <= csr_stb;
        we_q <= csr_we;
        adr_q <= csr_adr;
        dat_w_q <= csr_dat_w;
    end

    wire mem_cyc, mem_stb, mem_we;
    wire [31-`LINE_LOG2:0] mem_adr;
    wire [`LINE_BITS-1:0] mem_dat_w;
    reg [`LINE_BITS-1:0] mem_dat_r;
    reg ready = 0;  // the stall decision for the next cycle with a request
    wire request = mem_cyc & mem_stb;
    wire mem_ack = request & ready;
    always_ff @(posedge clk)
        ready <= wishbone_memory_edge(request, mem_ack, mem_we, 32'(mem_adr), mem_dat_w);
    // Depends on `ready`, so it runs after the edge's write: a read sees the latest data.
    always_comb begin
        mem_dat_r = 0;
        if (mem_ack & ~mem_we) wishbone_memory_read(32'(mem_adr), mem_dat_r);
    end

    @CORE@ core (
        .clk(clk), .rst(rst_q), .irq(irq),
        .mem_cyc(mem_cyc), .mem_stb(mem_stb), .mem_we(mem_we), .mem_adr(mem_adr),
        .mem_dat_w(mem_dat_w), .mem_sel(), .mem_dat_r(mem_dat_r), .mem_ack(mem_ack),
        .csr_cyc(cyc_q), .csr_stb(stb_q), .csr_we(we_q), .csr_adr(adr_q),
        .csr_dat_w(dat_w_q), .csr_dat_r(csr_dat_r), .csr_ack(csr_ack)
    );
`endif
endmodule
