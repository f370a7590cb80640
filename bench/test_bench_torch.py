"""pytest-benchmark suite: fastgd.torch against torch.optim on CPU tensors.

    PYTHONPATH=src pytest bench/test_bench_torch.py                      # measure
    FASTGD_BENCH_QUICK=1 pytest bench/test_bench_torch.py --benchmark-disable   # smoke run

Groups (compare within a group; bench/torch_report.py prints the side-by-side table):
* ``adamw-<set>``: fastgd.torch.AdamW, torch.optim.AdamW(fused=True) and foreach=True on one parameter set (GPT-2 small, 148 tensors, 124M; quick mode: a 2-block set);
* ``<rule>-<set>``: every rule torch does not fuse on CPU, fastgd.torch against torch's default;
* ``many-small``: fastgd.torch.AdamW on 200 tensors of 4,096 elements and on one of 819,200.
Gradients are filled once; each benchmark owns its optimizer (and so its state).
"""
import pytest

torch = pytest.importorskip("torch", reason="fastgd.torch benchmarks compare with torch.optim")

import fastgd.torch as FT  # noqa: E402
from _harness import rounds_for  # noqa: E402
from torch_report import gpt2_shapes, make_set  # noqa: E402

_sets = {}


def _set(config, name):
    quick = config.fastgd_bench.quick
    key = (name, quick)
    if key not in _sets:
        _sets.clear()  # one set alive at a time (GPT-2: ~1 GB of params and grads)
        if name == "gpt2":
            shapes = gpt2_shapes(50257 // 64, 1024 // 64, 1) if quick else gpt2_shapes()
        elif name == "small200":
            shapes = [(4096,)] * (20 if quick else 200)
        else:
            shapes = [(4096 * (20 if quick else 200),)]
        _sets[key] = make_set(shapes)
    return _sets[key]


def _bench(benchmark, config, opt, group, impl, ps):
    settings = config.fastgd_bench
    n = sum(p.numel() for p in ps)
    benchmark.group = group
    benchmark.extra_info.update(impl=impl, tensors=len(ps), n=n, threads=settings.threads,
                                torch_threads=torch.get_num_threads())
    opt.step()  # state created outside the timing
    rounds = rounds_for(benchmark, settings, opt.step)
    benchmark.pedantic(opt.step, rounds=rounds, iterations=1, warmup_rounds=0 if rounds == 1 else 1)
    assert all(torch.isfinite(p).all() for p in ps)


ADAMW = [("fastgd.torch", lambda ps: FT.AdamW(ps, lr=1e-3)),
         ("torch-fused", lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=True)),
         ("torch-foreach", lambda ps: torch.optim.AdamW(ps, lr=1e-3, foreach=True))]


@pytest.mark.parametrize("impl,make", ADAMW, ids=[a[0] for a in ADAMW])
def test_adamw_gpt2(benchmark, pytestconfig, impl, make):
    ps = _set(pytestconfig, "gpt2")
    _bench(benchmark, pytestconfig, make(ps), "adamw-gpt2", impl, ps)


UNFUSED = ["Adamax", "NAdam", "RAdam", "Adadelta", "RMSprop"]


@pytest.mark.parametrize("impl", ["fastgd.torch", "torch-default"])
@pytest.mark.parametrize("rule", UNFUSED)
def test_unfused_rule_gpt2(benchmark, pytestconfig, rule, impl):
    ps = _set(pytestconfig, "gpt2")
    opt = getattr(FT if impl == "fastgd.torch" else torch.optim, rule)(ps)
    _bench(benchmark, pytestconfig, opt, "%s-gpt2" % rule.lower(), impl, ps)


@pytest.mark.parametrize("kind", ["small200", "one"])
def test_many_small_tensors(benchmark, pytestconfig, kind):
    ps = _set(pytestconfig, kind)
    _bench(benchmark, pytestconfig, FT.AdamW(ps, lr=1e-3), "many-small", kind, ps)
