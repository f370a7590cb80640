"""The pure-NumPy reference of every fastgd kernel: the readable specification and the
oracle every compiled backend is tested against."""
from . import rules
from .rules import *  # noqa: F401,F403
from ..backends import lazy_kernels


# TensorFlow's training ops (fastgd.tf, the spec in .tf): imported at first use
__getattr__ = lazy_kernels(__name__, "tf_", "tf")
