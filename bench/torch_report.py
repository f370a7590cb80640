"""fastgd.torch against torch.optim (and DeepSpeed's CPU Adam when installed): a table of
step times, one run, side by side.

    PYTHONPATH=src python bench/torch_report.py [--rounds 5] [--quick]

Every comparison steps the same parameter and gradient tensors (filled once, seeded) with
each optimizer in turn, round after round (the optimizers alternate, so a slow spell of the
shared machine hits all of them alike); the table gives each one's median time per step and
the ratio other / fastgd (> 1: fastgd is faster).  Each optimizer keeps its own state.

Sets:
* "GPT-2 small": the 148 float32 tensors of the 124M-parameter model (token embedding
  50257x768, position embedding 1024x768; 12 blocks of 2 LayerNorms (768, 768), attention
  c_attn 768x2304 + 2304, c_proj 768x768 + 768, MLP c_fc 768x3072 + 3072, c_proj 3072x768 +
  768; a final LayerNorm): AdamW against torch.optim.AdamW(fused=True), foreach=True
  (torch's default on CPU is its for-loop) and DeepSpeedCPUAdam(adamw_mode=True); every rule torch does not fuse on CPU
  (Adamax, NAdam, RAdam, Adadelta, RMSprop) against torch's default.
* 200 tensors of 4,096 elements against one tensor of 819,200 (fastgd.torch.AdamW).
``--quick``: a GPT-2 set with 1/16 of the embedding rows and 2 blocks (a smoke run).

Every GPT-2 comparison also times a skeleton (``fastgd.bench``'s ``copy_skeleton``: fastgd's
bytes of the rule, one read of every array and one write of every written one, trivial
arithmetic) on flat float32 buffers of the set's size, alternated with the optimizers.  Its
ratio other / skeleton is the ceiling of other / fastgd: no step that moves fastgd's bytes
through memory once runs faster than it.  The lines after the table give each one.
"""
import argparse
import statistics
import time

import numpy as np
import torch

import fastgd
import fastgd.torch as FT
from fastgd.backends import backend_module
from fastgd.bench import KERNELS

D = 768


def gpt2_shapes(vocab=50257, ctx=1024, blocks=12):
    shapes = [(vocab, D), (ctx, D)]
    for _ in range(blocks):
        shapes += [(D,), (D,), (D, 3 * D), (3 * D,), (D, D), (D,), (D,), (D,), (D, 4 * D), (4 * D,), (4 * D, D), (D,)]
    return shapes + [(D,), (D,)]


def make_set(shapes, seed=0):
    """Parameters (nn.Parameter) with gradients filled once, seeded."""
    g = torch.Generator().manual_seed(seed)
    ps = []
    for s in shapes:
        p = torch.nn.Parameter(torch.randn(s, generator=g) * 0.02)
        p.grad = torch.randn(s, generator=g) * 1e-3
        ps.append(p)
    return ps


def deepspeed_adam(params):
    """DeepSpeedCPUAdam(adamw_mode=True), or None when deepspeed does not import (or build)."""
    try:
        from deepspeed.ops.adam import DeepSpeedCPUAdam
        return DeepSpeedCPUAdam(params, lr=1e-3, adamw_mode=True)
    except Exception as exc:  # ImportError, or its CPU op failing to build
        print("(DeepSpeed not in the table: %s: %s)" % (type(exc).__name__, str(exc).splitlines()[0][:100]))
        return None


def paired(optimizers, rounds):
    """{name: median seconds per step}: one warm-up step each, then ``rounds`` rounds in which
    every optimizer steps once, in turn."""
    times = {name: [] for name in optimizers}
    for opt in optimizers.values():
        opt.step()
    for _ in range(rounds):
        for name, opt in optimizers.items():
            t = time.perf_counter()
            opt.step()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(v) for name, v in times.items()}


class Skeleton:
    """``step()``: the copy skeleton of rule ``kernel``'s float32 bytes over ``n`` elements (one
    flat buffer per array, filled: a never-written zero page costs no memory traffic)."""

    def __init__(self, kernel, n):
        self.arrays = [np.full(n, 0.5, np.float32) for _ in range(2 + len(KERNELS[kernel].states))]
        self.skel = backend_module("cython").copy_skeleton

    def step(self):
        self.skel(*self.arrays)


SKELETON = "skeleton of fastgd's bytes (ceiling)"


def ceilings(med):
    """"other / skeleton" for every optimizer but fastgd: the best other / fastgd possible."""
    sk = med[SKELETON]
    return ["  %s: at most %.2fx (other / skeleton)" % (name, t / sk) for name, t in med.items()
            if name not in (SKELETON, "fastgd.torch")]


def row(label, med, base="fastgd.torch"):
    out = []
    for name, t in med.items():
        ratio = "" if name == base else "%.2fx" % (t / med[base])
        out.append("| %-42s | %-36s | %10.2f | %7s |" % (label, name, t * 1e3, ratio))
        label = ""
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    info = fastgd.build_info()
    print("fastgd", info["version"], "| torch", torch.__version__, "| threads fastgd", info["num_threads"],
          "torch", torch.get_num_threads(), "|", info["simd_variant"], "|", info["compiler"])
    shapes = gpt2_shapes(50257 // 16, 1024 // 16, 2) if args.quick else gpt2_shapes()
    ps = make_set(shapes)
    n = sum(p.numel() for p in ps)
    set_name = "GPT-2 small (%d tensors, %.1fM)" % (len(ps), n / 1e6)
    lines = ["| %-42s | %-36s | %10s | %7s |" % ("set / rule", "optimizer", "ms / step", "other/fg"),
             "|" + "-" * 44 + "|" + "-" * 38 + "|" + "-" * 12 + "|" + "-" * 9 + "|"]
    opts = {"fastgd.torch": FT.AdamW(ps, lr=1e-3),
            "torch.optim (fused=True)": torch.optim.AdamW(ps, lr=1e-3, fused=True),
            "torch.optim (foreach=True)": torch.optim.AdamW(ps, lr=1e-3, foreach=True)}
    ds = deepspeed_adam(ps)
    if ds is not None:
        opts["DeepSpeedCPUAdam(adamw_mode=True)"] = ds
    opts[SKELETON] = Skeleton("adamw", n)
    med = paired(opts, args.rounds)
    lines += row(set_name + " AdamW", med)
    notes = ["AdamW, " + set_name] + ceilings(med)
    del opts, ds
    for name in ("Adamax", "NAdam", "RAdam", "Adadelta", "RMSprop"):
        opts = {"fastgd.torch": getattr(FT, name)(ps), "torch.optim (default)": getattr(torch.optim, name)(ps),
                SKELETON: Skeleton(name.lower(), n)}
        med = paired(opts, max(2, args.rounds // 2))
        lines += row(set_name + " " + name, med)
        notes += [name] + ceilings(med)
        del opts
    del ps
    small = make_set([(4096,)] * 200, seed=1)
    big = make_set([(819200,)], seed=2)
    med = paired({"fastgd.torch 200 x 4,096": FT.AdamW(small), "fastgd.torch 1 x 819,200": FT.AdamW(big)},
                 args.rounds * 40)
    lines += row("AdamW, 819,200 elements", med, base="fastgd.torch 1 x 819,200")
    print("\n".join(lines))
    print("\nThe ceilings of other / fastgd (a step moving fastgd's bytes once, at this run's bandwidth):")
    print("\n".join(notes))


if __name__ == "__main__":
    main()
