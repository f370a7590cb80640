"""The experiments of the gradient-descent texts, with fastgd.

    python examples/textbook_experiments.py [--out DIR] [--quick]

1. The published results, recomputed (1-D quadratic; Beale 300,000 iterations, run as one
   compiled loop when numba is installed; momentum vs look-ahead Nesterov on two Gaussians).
2. Every update rule on Beale's function, the bowl and the two Gaussians, with the path plots
   (``fastgd.demo``; the same as ``python -m fastgd.demo --out DIR``).
3. A few lines showing the pieces the experiments are made of: the driver, an optimizer
   object with a learning-rate schedule, gradient checking and Newton's method.
"""
import sys

import numpy as np

from fastgd import demo
from fastgd import functions as F
from fastgd.descent import gradient_descent, newton
from fastgd.gradcheck import check_gradient
from fastgd.optim import Adam, CosineAnnealingLR


def pieces():
    print("\nThe pieces:")
    # the driver with a rule by name (torch's hyperparameter names)
    r = gradient_descent(F.canyon.grad, F.canyon.start, "sgd", lr=0.02, momentum=0.9, iterations=500)
    print("  SGD + momentum on the canyon: x = %s after %d steps (converged: %s)" % (r.x, r.n_iter, r.converged))
    # an optimizer object and a schedule, driven by hand
    x = np.array(F.rosenbrock.start)
    opt = Adam([x], lr=0.05)
    sched = CosineAnnealingLR(opt, T_max=3000, eta_min=1e-4)
    for _ in range(3000):
        opt.step([F.rosenbrock.grad(x)])
        sched.step()
    print("  Adam + cosine schedule on Rosenbrock, 3000 steps: x = %s" % x)
    # gradient check of an analytic gradient
    res = check_gradient(lambda p: float(F.beale(p)), F.beale.grad, np.array([1.0, 1.5]))
    print("  Beale's analytic gradient vs central differences: max relative error %.1e (%s)"
          % (res.max_rel_error[0], "pass" if res.passed else "FAIL"))
    # Newton's method
    r = newton(F.rosenbrock.grad, F.rosenbrock.hess, F.rosenbrock.start, iterations=50)
    print("  Newton on Rosenbrock from %s: x = %s in %d steps" % (F.rosenbrock.start, r.x, r.n_iter))


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--out" not in argv:
        argv += ["--out", "textbook-experiments"]
    status = demo.main(argv)
    pieces()
    return status


if __name__ == "__main__":
    sys.exit(main())
