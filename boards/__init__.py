"""Board presets and build flows (open toolchain for iCE40/ECP5; Verilog + Vivado for Zynq)."""

from trilobit.boards.presets import BOARDS, BoardPreset, get_board

__all__ = ["BOARDS", "BoardPreset", "get_board"]
