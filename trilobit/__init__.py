"""trilobit: low-bit neural-network accelerators for edge FPGAs.

Generate the hardware (``trilobit.hw``), prove it bit-exact in simulation
(``trilobit.sim``), compile quantized ONNX models onto it (``trilobit.sw``) and build it
for a board (``trilobit.boards``). Importing ``trilobit`` itself stays cheap: subpackages
load only when used.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("trilobit")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__", "Session"]


def __getattr__(name: str):
    # trilobit.Session without importing the compiler (onnx, onnxruntime) at package import.
    if name == "Session":
        from trilobit.sw.runtime import Session

        return Session
    raise AttributeError(f"module 'trilobit' has no attribute {name!r}")
