"""The pure-NumPy reference of every fastgd kernel: the readable specification and the
oracle every compiled backend is tested against."""
from . import rules
from .rules import *  # noqa: F401,F403
