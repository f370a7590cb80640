"""fastgd: fused, in-place gradient-descent step kernels for NumPy arrays.

    >>> import numpy as np, fastgd
    >>> p = np.ones(5, np.float32); g = p.copy()
    >>> m = np.zeros_like(p); v = np.zeros_like(p)
    >>> fastgd.adam_step(p, g, m, v, step=1, lr=0.1)   # p, m, v updated in place
    array([0.9, 0.9, 0.9, 0.9, 0.9], dtype=float32)

Backends: ``"cython"`` (default), ``"numba"`` (``pip install 'fastgd[numba]'``), ``"numpy"``
(the reference).  Switch with ``set_backend``, ``use_backend`` or ``backend=`` per call.
"""
__version__ = "0.1.0"

from .backends import (available_backends, get_backend, get_num_threads, serial_cutoff,  # noqa: F401
                       serial_cutoff_source, set_backend, set_num_threads, set_serial_cutoff, use_backend)
from ._calibrate import calibrate_serial_cutoff  # noqa: F401
from .steps import (adadelta_step, adagrad_step, adam_step, adamax_step, adamw_step, lion_step,  # noqa: F401
                    nadam_mu_product, nadam_step, radam_step, rmsprop_step, sgd_step)
from . import functions, multi, nn, optim  # noqa: F401,E402
from .descent import gradient_descent, newton  # noqa: F401,E402
from .gradcheck import check_gradient, numerical_gradient  # noqa: F401,E402

__all__ = [
    "__version__", "build_info",
    "available_backends", "get_backend", "set_backend", "use_backend",
    "get_num_threads", "set_num_threads", "serial_cutoff", "set_serial_cutoff", "serial_cutoff_source",
    "calibrate_serial_cutoff",
    "sgd_step", "adam_step", "adamw_step", "adamax_step", "nadam_step", "nadam_mu_product", "radam_step",
    "adagrad_step", "adadelta_step", "rmsprop_step", "lion_step",
    "gradient_descent", "newton", "numerical_gradient", "check_gradient", "optim", "functions", "nn", "multi",
]


def build_info():
    """How this fastgd was built and what it runs on: version, compiler, OpenMP, SIMD
    variant, thread settings (with where the serial cutoff came from) and the available
    backends."""
    import platform

    import numpy

    backends = available_backends()  # loads them: the Cython backend settles the serial cutoff
    info = {"version": __version__, "numpy": numpy.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "num_threads": get_num_threads(),
            "serial_cutoff": serial_cutoff(), "serial_cutoff_source": serial_cutoff_source(),
            "backends": backends, "default_backend": get_backend()}
    try:
        from ._cython import SIMD_VARIANT, _core
        info.update(compiler=_core.compiler(), openmp=_core.openmp_enabled(),
                    omp_max_threads=_core.omp_max_threads(), cpu_features=_core.cpu_features(),
                    simd_variant=SIMD_VARIANT)
    except ImportError as exc:
        info.update(compiler=None, openmp=False, cython_error=str(exc))
    try:
        import numba
        info["numba"] = numba.__version__
    except ImportError:
        info["numba"] = None
    return info
