"""The numba backend: the same kernels as @njit functions, each body written once and
compiled twice, serial and ``parallel=True`` (used above ``fastgd.serial_cutoff()``)."""
import numba  # noqa: F401  (ImportError here marks the backend unavailable)

from .rules import *  # noqa: F401,F403
from .rules import __all__  # noqa: F401


def __getattr__(name):
    """TensorFlow's training ops (fastgd.tf): .tf imported at the first use of one of them."""
    if name.startswith("tf_"):
        from . import tf
        try:
            return getattr(tf, name)
        except AttributeError:
            pass
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
