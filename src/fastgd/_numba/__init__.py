"""The numba backend: the same kernels as @njit functions, each body written once and
compiled twice, serial and ``parallel=True`` (used above ``fastgd.serial_cutoff()``)."""
import numba  # noqa: F401  (ImportError here marks the backend unavailable)

from .rules import *  # noqa: F401,F403
from ..backends import lazy_kernels
from .rules import __all__  # noqa: F401


# TensorFlow's training ops (fastgd.tf): .tf imported at the first use of one of them
__getattr__ = lazy_kernels(__name__, "tf_", "tf")
