"""The Cython backend: fused OpenMP kernels, compiled once per instruction-set target.

At import the best variant the CPU supports is chosen (``avx512`` > ``avx2`` > ``base``);
``FASTGD_SIMD=base|avx2|avx512`` forces one (for testing and measuring).
"""
import importlib
import os

from . import _core
from .._rules import KERNELS
from ..backends import lazy_kernels, on_thread_settings

# the kernels read the thread settings from C; with none set they follow OpenMP's count
on_thread_settings(_core.set_threads, _core.openmp_threads, _core.serial_only)
# a child forked after a kernel ran a team steps on one thread (GNU libgomp hangs there)
os.register_at_fork(after_in_child=_core.after_fork_in_child)

_features = _core.cpu_features()
_order = [v for v in ("avx512", "avx2") if _features.get(v)] + ["base"]
_forced = os.environ.get("FASTGD_SIMD", "").strip().lower()
if _forced:
    if _forced not in ("base", "avx2", "avx512"):
        raise ImportError("FASTGD_SIMD must be base, avx2 or avx512, got %r" % _forced)
    if _forced != "base" and not _features.get(_forced):
        raise ImportError("FASTGD_SIMD=%s but this CPU lacks %s" % (_forced, _forced))
    _order = [_forced]

_rules = None
for _v in _order:
    try:
        _rules = importlib.import_module("fastgd._cython._rules_" + _v)
        break
    except ImportError:  # variant not built (non-x86 machine, MSVC, FASTGD_NO_SIMD_VARIANTS)
        continue
if _rules is None:
    raise ImportError("no compiled fastgd._cython._rules_* module; reinstall fastgd")

SIMD_VARIANT = _v
# single-tensor kernels, their multi-tensor forms (<rule>_multi, used by fastgd.multi) and helpers
for _k in KERNELS + tuple(k + "_multi" for k in KERNELS) + ("copy_skeleton", "multi_arrays_ok", "multi_chunk",
                                                              "global_norm", "unscale_and_check", "half_cast",
                                                              "half_skeleton"):
    if hasattr(_rules, _k):
        globals()[_k] = getattr(_rules, _k)

# TensorFlow's training ops (fastgd.tf): the _tf_<variant> module of the same variant, imported
# at the first use of one of its kernels (tf_apply_*, tf_sparse_apply_*), not with fastgd
__getattr__ = lazy_kernels(__name__, "tf_", "_tf_" + SIMD_VARIANT)


# the <rule>_multi kernels take half-precision arrays and grad_scale=, clip=, masters= (staged.pxi)
STAGED = True
