"""Type aliases of the public annotations (read by type checkers only).

Every module imports this under ``if TYPE_CHECKING:`` and writes its annotations as strings
(``from __future__ import annotations``), so nothing here is imported or evaluated when
fastgd runs: the annotations cost nothing at import or per call.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, SupportsFloat, Union

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

__all__ = ["FloatArray", "ArrayList", "OptArrayList", "Backend", "Scale", "Activation", "Objective", "Gradient", "Hessian", "Method",
           "Params", "StateDType",
           "ArrayLike", "DTypeLike", "NDArray"]

#: a parameter, gradient or state array: float32/float64, or float16/bfloat16 where a step
#: takes half precision (ml_dtypes' bfloat16 is not a numpy.floating: its arrays are ``NDArray[Any]``,
#: which a type checker accepts here too)
FloatArray = NDArray[np.floating[Any]]
#: the list arguments of fastgd.multi (one array per tensor)
ArrayList = Sequence[FloatArray]
#: an optional state list or ``master_params`` (None for the tensors that have no master)
OptArrayList = Sequence[Union[FloatArray, None]]
#: a backend name (fastgd.available_backends() says which import here)
Backend = Literal["cython", "numba", "numpy"]
#: ``grad_scale``: a real > 0, or a float32 array of one element (a loss scaler's scale)
Scale = Union[float, FloatArray]
#: the dense layers' activations
Activation = Literal["identity", "relu", "leaky_relu", "sigmoid", "tanh"]
#: f(x) -> a real number (fastgd.gradcheck); x is a float64 array (or a list of them)
Objective = Callable[[Any], SupportsFloat]
#: grad(x) -> an array of x's shape (fastgd.descent; x is an array of x0's dtype)
Gradient = Callable[[NDArray[Any]], ArrayLike]
#: hess(x) -> the (n, n) Hessian (fastgd.descent.newton)
Hessian = Callable[[NDArray[Any]], ArrayLike]
#: the update rules of fastgd.gradient_descent (fastgd.descent.METHODS, and "gd" for "sgd")
Method = Literal["sgd", "gd", "adam", "adamw", "adamax", "nadam", "radam", "adagrad", "adadelta", "rmsprop",
                 "lion", "momentum", "nesterov_lookahead"]
#: an optimizer's ``params``: an array, a list of arrays, or a list of parameter groups (dicts
#: with ``"params"`` and hyperparameters)
Params = Union[FloatArray, Iterable[FloatArray], Iterable[Mapping[str, Any]]]
#: an optimizer's ``state_dtype``
StateDType = Literal["float32", "param"]
