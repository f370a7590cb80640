"""fastgd.torch as the local optimizer of torch.distributed.optim.ZeroRedundancyOptimizer
(ZeRO stage 1) under DistributedDataParallel, gloo, 2 ranks on 127.0.0.1.

The test runs this file as a script in a subprocess (with a timeout, so a hung collective can
never hang CI); the script spawns the 2 ranks.  Each rank trains the same float64 MLP
(DDP averages the gradients of the two ranks' different batches; ZeroRedundancyOptimizer
steps each rank's shard of the parameters and broadcasts it) for 6 steps, once with
``optimizer_class=fastgd.torch.<X>`` and once with ``torch.optim.<X>`` (foreach=False).
The trained parameters agree to rtol 1e-13 (float64; the kernels order a few float64
operations differently from torch's, as in tests/test_torch.py, so bit equality is not
expected), and the consolidated state dict has torch's keys.
"""
import os
import socket
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(rank, world, port, out):
    import datetime

    import torch
    import torch.distributed as dist
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel as DDP

    import fastgd.torch as FT

    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:%d" % port, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    torch.set_default_dtype(torch.float64)
    results = {}
    for name, kw in (("AdamW", dict(lr=0.01, weight_decay=0.1)), ("Adam", dict(lr=0.01, amsgrad=True))):
        for mod in (FT, torch.optim):
            torch.manual_seed(0)
            model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16),
                                        torch.nn.Tanh(), torch.nn.Linear(16, 1))
            ddp = DDP(model)
            extra = {} if mod is FT else {"foreach": False}
            opt = ZeroRedundancyOptimizer(ddp.parameters(), optimizer_class=getattr(mod, name), **kw, **extra)
            g = torch.Generator().manual_seed(100 + rank)
            for _ in range(6):
                x = torch.randn(32, 8, generator=g)
                y = x.sum(1, keepdim=True).sin()
                opt.zero_grad()
                (ddp(x) - y).square().mean().backward()
                opt.step()
            opt.consolidate_state_dict(to=0)
            if rank == 0:
                sd = opt.state_dict()
                results[(name, mod.__name__)] = ([p.detach().clone() for p in model.parameters()],
                                                 {k: sorted(v) for k, v in sd["state"].items()},
                                                 type(opt.optim).__module__)
    if rank == 0:
        torch.save(results, out)
    dist.barrier()
    dist.destroy_process_group()


def test_zero_redundancy_optimizer_two_ranks(tmp_path):
    import conftest
    torch = conftest.torch_or_skip()
    import torch.distributed as dist
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available in this build")
    out = str(tmp_path / "result.pt")
    env = dict(os.environ)
    import fastgd  # the ranks import this same fastgd (the installed, compiled one in CI: src/ has no .so)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [os.path.dirname(os.path.dirname(os.path.abspath(fastgd.__file__))),
                                                    env.get("PYTHONPATH", "")] if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), str(_free_port()), out], env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = torch.load(out, weights_only=False)
    for name in ("AdamW", "Adam"):
        ours, theirs = res[(name, "fastgd.torch")], res[(name, "torch.optim")]
        assert ours[2] == "fastgd.torch" and theirs[2].startswith("torch.optim")
        assert len(ours[0]) == 6
        for a, b in zip(ours[0], theirs[0]):
            torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-15)
        assert ours[1] == theirs[1]  # the consolidated state: the same parameters, torch's keys
        assert len(ours[1]) == 6


def _main():
    import torch.multiprocessing as mp
    port, out = int(sys.argv[1]), sys.argv[2]
    mp.start_processes(_train, args=(2, port, out), nprocs=2, join=True, start_method="spawn")


if __name__ == "__main__":
    _main()
