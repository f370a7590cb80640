"""fastgd.torch under hostile use: one regression test per finding of the hostile review.

fastgd.torch caches zero-copy NumPy views of torch's memory between steps, and its compiled
kernels write through them.  Every test here changes something behind the optimizer's back
(a storage moved, a tensor resized, a state entry replaced, ...) and checks that the next step
either matches torch.optim or raises a clear error having changed nothing.  Where a wrong
answer could be a crash (a write through a dangling view), the case runs in a subprocess, so
that a crash fails the test instead of the run.
"""
import collections
import subprocess
import sys
import textwrap

import pytest

import conftest

torch = conftest.torch_or_skip()
import fastgd.torch as FT  # noqa: E402

D = torch.float64


def _in_subprocess(code):
    """Run ``code`` in a fresh interpreter; it must print OK and exit 0 (a segfault is rc -11)."""
    code = "import torch, fastgd.torch as FT\n" + textwrap.dedent(code)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip().endswith("OK"), (r.returncode, r.stdout, r.stderr[-2000:])


def _param(n=8, dtype=D, fill=0.0):
    p = torch.nn.Parameter(torch.full((n,), fill, dtype=dtype))
    p.grad = torch.linspace(-1, 1, n, dtype=dtype)
    return p


def _pair(name="Adam", n=8, **kw):
    kw.setdefault("lr", 0.1)
    p, q = _param(n), _param(n)
    return p, getattr(FT, name)([p], **kw), q, getattr(torch.optim, name)([q], **kw)


def _close(a, b):
    torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-13, atol=1e-15)


def test_state_storage_moved_by_share_memory_no_dangling_write():
    """Finding 1 (crash): ``state['exp_avg'].share_memory_()`` after a step moves the state's
    memory; the cached view pointed at the freed block and the next step wrote there
    (segfault for a large tensor).  The step now sees the new address and matches torch."""
    _in_subprocess("""
        n = 1 << 22
        ps = [torch.nn.Parameter(torch.zeros(n)) for _ in range(2)]
        opts = [FT.Adam([ps[0]], lr=0.1), torch.optim.Adam([ps[1]], lr=0.1)]
        for _ in range(3):
            for p, o in zip(ps, opts):
                p.grad = torch.ones(n)
                o.step()
                o.state[p]["exp_avg"].share_memory_()
                o.state[p]["exp_avg_sq"].share_memory_()
        torch.testing.assert_close(ps[0], ps[1], rtol=2e-5, atol=1e-6)
        torch.testing.assert_close(opts[0].state[ps[0]]["exp_avg"], opts[1].state[ps[1]]["exp_avg"])
        print("OK")
    """)


def test_state_data_swapped_is_picked_up():
    """Finding 2 (silent wrong result): ``state['exp_avg'].data = ...`` left the step writing to
    the old, orphaned storage; the tensor in ``opt.state`` never changed again."""
    p, o, q, t = _pair()
    o.step(); t.step()
    o.state[p]["exp_avg"].data = torch.zeros(8, dtype=D)
    t.state[q]["exp_avg"].data = torch.zeros(8, dtype=D)
    o.step(); t.step()
    _close(p, q)
    _close(o.state[p]["exp_avg"], t.state[q]["exp_avg"])


def test_param_reshaped_in_place_same_address_refused():
    """Finding 3 (write outside the parameter): ``p.set_(storage, 0, smaller)`` / ``p.resize_``
    keep the address; the cached view still covered the old extent and the step wrote past the
    parameter's end into the rest of the buffer.  Now the step sees the new shape (and refuses
    the gradient that no longer matches, changing nothing)."""
    buf = torch.zeros(8, dtype=D)
    p = buf[:8]
    p.grad = torch.ones(8, dtype=D)
    opt = FT.SGD([p], lr=1.0)
    opt.step()
    p.set_(buf.untyped_storage(), 0, (4,))
    with pytest.raises(ValueError, match=r"shape \(4,\) but its gradient \(8,\)"):
        opt.step()
    assert buf.tolist() == [-1.0] * 8
    p.grad = torch.ones(4, dtype=D)
    opt.step()
    assert buf.tolist() == [-2.0] * 4 + [-1.0] * 4


def test_param_transposed_in_place_seen():
    """Finding 3b: ``p.t_()`` (same address, same numel, new strides) went unnoticed and the
    step paired the parameter's memory with a gradient laid out the other way (torch steps
    ``p[i, j]`` with ``g[i, j]``).  Now it is seen: the gradient's layout no longer matches and
    the step refuses it, changing nothing; a gradient in the new layout steps as torch."""
    ps = [torch.nn.Parameter(torch.arange(9.0, dtype=D).reshape(3, 3)) for _ in range(2)]
    opts = [FT.SGD([ps[0]], lr=0.1), torch.optim.SGD([ps[1]], lr=0.1)]
    for p, o in zip(ps, opts):
        p.grad = torch.arange(9.0, dtype=D).reshape(3, 3)
        o.step()
        with torch.no_grad():
            p.t_()
    before = ps[0].detach().clone()
    with pytest.raises(ValueError, match="its gradient has strides"):
        opts[0].step()
    assert torch.equal(ps[0].detach(), before)
    for p, o in zip(ps, opts):
        p.grad = torch.arange(9.0, dtype=D).reshape(3, 3).t()
        o.step()
    _close(ps[0], ps[1])


def test_step_bumps_autograd_version():
    """Finding 4 (wrong vs torch): the kernels' writes did not bump the parameters' version
    counters, so a backward through a graph saved before the step silently used the new
    values; torch raises.  Now it raises as with torch.optim."""
    for mod in (torch.optim, FT):
        p = _param()
        loss = (p * p).sum()
        mod.SGD([p], lr=0.1).step()
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            loss.backward()


def test_step_tensor_changed_in_place_is_read():
    """Finding 5 (wrong vs torch): ``state['step'].zero_()`` was ignored (the step count was
    cached as an int)."""
    p, o, q, t = _pair()
    for _ in range(2):
        o.step(); t.step()
    o.state[p]["step"].zero_()
    t.state[q]["step"].zero_()
    o.step(); t.step()
    _close(p, q)
    assert float(o.state[p]["step"]) == float(t.state[q]["step"]) == 1.0


@pytest.mark.parametrize("step, exc", [(float("nan"), ValueError), (float("inf"), ValueError), (-3.0, ValueError),
                                       (1.5, ValueError), ("ones", TypeError), ("str", TypeError)])
def test_bad_step_in_state_refused_nothing_changed(step, exc):
    """Finding 6 (unclear errors / silent truncation): a NaN/inf/negative step gave
    'cannot convert float NaN to integer' or OverflowError, a step of 1.5 was silently
    truncated, a 3-element step 'only one element tensors ...'.  Now a clear error naming the
    parameter, before anything is written."""
    p, o, _, _ = _pair()
    o.step()
    sd = o.state_dict()
    sd["state"][0]["step"] = torch.ones(3) if step == "ones" else ("x" if step == "str" else torch.tensor(step))
    o.load_state_dict(sd)
    before = p.detach().clone()
    with pytest.raises(exc, match=r"state of param_groups\[0\]\['params'\]\[0\]: 'step'"):
        o.step()
    assert torch.equal(p.detach(), before)


def test_step_assigned_as_number_like_a_tensor():
    """Finding 6b: ``state['step'] = 3`` (a number) gave AttributeError: 'int' object has no
    attribute 'dtype'; it is now taken as torch's 0-dim tensor."""
    p, o, q, t = _pair()
    o.step(); t.step()
    o.state[p]["step"] = 3
    t.state[q]["step"] = torch.tensor(3.0)
    o.step(); t.step()
    _close(p, q)
    assert torch.is_tensor(o.state[p]["step"]) and float(o.state[p]["step"]) == 4.0


def test_opt_state_reassigned_restarts_like_torch():
    """Finding 7 (wrong vs torch): ``opt.state = defaultdict(dict)`` (a reset) was not seen: the
    step went on with the old state and the new dict stayed empty."""
    p, o, q, t = _pair()
    o.step(); t.step()
    p.grad = q.grad = torch.full((8,), 3.0, dtype=D)
    o.step(); t.step()
    o.state = collections.defaultdict(dict)
    t.state = collections.defaultdict(dict)
    p.grad = q.grad = torch.linspace(-2, 5, 8, dtype=D)
    o.step(); t.step()
    _close(p, q)
    assert float(o.state[p]["step"]) == 1.0
    _close(o.state[p]["exp_avg_sq"], t.state[q]["exp_avg_sq"])


def test_state_aliasing_another_groups_param_refused():
    """Finding 8 (write into another parameter): a state tensor of group 0 that aliases a
    parameter of group 1 (groups with different state lists, amsgrad on/off) passed the
    cross-group overlap check, and the step wrote the state into the other parameter."""
    p, q = _param(), _param()
    opt = FT.Adam([{"params": [p], "amsgrad": True}, {"params": [q]}], lr=0.1)
    opt.step()
    opt.state[p]["max_exp_avg_sq"] = q.data
    before = (p.detach().clone(), q.detach().clone())
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[0\] \(its state 'max_exp_avg_sqs'\) "
                                         r"and param_groups\[1\]\['params'\]\[0\] overlap"):
        opt.step()
    assert torch.equal(p.detach(), before[0]) and torch.equal(q.detach(), before[1])


def test_overlapping_views_in_two_groups_refused():
    buf = torch.zeros(8, dtype=D)
    a, b = buf[:6].requires_grad_(), buf[4:].requires_grad_()
    a.grad, b.grad = torch.ones(6, dtype=D), torch.ones(4, dtype=D)
    opt = FT.SGD([{"params": [a]}, {"params": [b]}], lr=0.1)
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[0\] and param_groups\[1\]\['params'\]\[0\] "
                                         r"overlap"):
        opt.step()
    assert buf.tolist() == [0.0] * 8


def test_negative_bit_tensors_refused_clearly():
    """Finding 9 (unclear error after state was created): a parameter or gradient with torch's
    negative bit (``torch._neg_view``) raised numpy's RuntimeError mid-build."""
    x = torch.zeros(8, dtype=D)
    with pytest.raises(TypeError, match="negative"):
        FT.Adam([torch._neg_view(x).requires_grad_()])
    p = _param()
    p.grad = torch._neg_view(torch.ones(8, dtype=D))
    opt = FT.Adam([p], lr=0.1)
    with pytest.raises(TypeError, match=r"param_groups\[0\]\['params'\]\[0\]: its gradient has torch's negative"):
        opt.step()
    assert len(opt.state) == 0 and p.detach().tolist() == [0.0] * 8


def test_inference_tensor_refused_like_torch():
    """Finding 10 (differs from torch): a parameter made under inference_mode was stepped in
    place, where torch.optim raises."""
    with torch.inference_mode():
        p = torch.zeros(4, dtype=D)
    with pytest.raises(ValueError, match="inference tensor"):
        FT.SGD([p], lr=0.1)


def test_removed_param_memory_released():
    """Finding 11 (leak): the view cache kept every parameter ever stepped (and its memory)
    after it left the optimizer's groups."""
    import gc
    import weakref
    p, q = _param(1 << 16), _param()
    opt = FT.Adam([p, q], lr=0.1)
    opt.step()
    r = weakref.ref(p)
    opt.param_groups[0]["params"].pop(0)
    opt.state.pop(p)
    del p
    opt.step()
    gc.collect()
    assert r() is None


def test_param_storage_moved_by_share_memory_and_data_swap():
    """Parameter and gradient storage moved (share_memory_, .data =) between steps: in a
    subprocess (a dangling write would crash), the result equals torch's."""
    _in_subprocess("""
        n = 1 << 21
        ps = [torch.nn.Parameter(torch.zeros(n)) for _ in range(2)]
        opts = [FT.Adam([ps[0]], lr=0.1), torch.optim.Adam([ps[1]], lr=0.1)]
        for i in range(4):
            for p, o in zip(ps, opts):
                p.grad = torch.full((n,), 1.0 + i)
                o.step()
                if i == 0:
                    p.share_memory_()
                    p.grad.share_memory_()
                elif i == 1:
                    p.data = p.data.clone()
                elif i == 2:
                    p.grad.data = p.grad.data.clone()
        torch.testing.assert_close(ps[0], ps[1], rtol=2e-5, atol=1e-6)
        print("OK")
    """)


def test_threads_stepping_concurrently_do_not_crash():
    """Four threads stepping one optimizer at once while replacing gradients (plans rebuilt in
    one thread while another runs a kernel): no crash, finite values (torch.optim gives no
    ordering between such steps either)."""
    _in_subprocess("""
        import threading
        ps = [torch.nn.Parameter(torch.zeros(50000)) for _ in range(4)]
        opt = FT.Adam(ps, lr=0.1)
        def run():
            for _ in range(100):
                for p in ps:
                    p.grad = torch.ones_like(p)
                opt.step()
        th = [threading.Thread(target=run) for _ in range(4)]
        for t in th: t.start()
        for t in th: t.join()
        assert 1 <= float(opt.state[ps[0]]["step"]) <= 400 and all(bool(p.isfinite().all()) for p in ps)
        print("OK")
    """)
