"""Errors raised by trilobit.

Every failure a user can cause (bad parameters, a malformed model, a program built for
another configuration, a device that times out) raises a subclass of :class:`TrilobitError`
whose message names the parameter, node, tensor or register at fault.
"""

from __future__ import annotations


class TrilobitError(Exception):
    """Base class of every error trilobit raises on purpose."""


class DatatypeError(TrilobitError, ValueError):
    """Unknown datatype, or a value/code outside a datatype's range."""


class QuantizationError(TrilobitError, ValueError):
    """Inconsistent scales, zero points, axes or block sizes."""


class PackingError(TrilobitError, ValueError):
    """A packing asked for an impossible layout (wrong length, bad group size...)."""


class ConfigError(TrilobitError, ValueError):
    """A hardware parameter outside its allowed range."""


class ToolchainError(TrilobitError, RuntimeError):
    """An external tool (Verilator, yosys, nextpnr, a C++ compiler) is missing or failed."""


class ModelError(TrilobitError, ValueError):
    """A malformed or unsupported ONNX model; the message names the node or tensor."""


class ProgramError(TrilobitError, ValueError):
    """A malformed program, or one built for another accelerator configuration."""


class BackendError(TrilobitError, RuntimeError):
    """A backend (golden, verilator, device) failed to run a program."""


class DeviceTimeout(BackendError, TimeoutError):
    """The accelerator did not finish within the allowed time."""
