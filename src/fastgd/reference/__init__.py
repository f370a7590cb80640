"""The pure-NumPy reference of every fastgd kernel: the readable specification and the
oracle every compiled backend is tested against."""
from . import rules
from .rules import *  # noqa: F401,F403


def __getattr__(name):
    """TensorFlow's training ops (fastgd.tf, the spec in .tf): imported at first use."""
    if name.startswith("tf_"):
        from . import tf
        try:
            return getattr(tf, name)
        except AttributeError:
            pass
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
