"""Data-parallel training: two gloo processes average to the single-process gradient."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyro
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pyro_zforcing.training import distributed
from pyro_zforcing.data.base import Batch
from pyro_zforcing.infer import Weights
from pyro_zforcing.build import build_objective

from conftest import small_config

WEIGHTS = Weights(kl=0.5, aux=0.3, bwd=0.2)
HALF = 2  # sequences per rank
REPO = Path(__file__).resolve().parent.parent


def full_batch() -> Batch:
    """4 ragged Gaussian sequences; each half holds a full-length one, so both pad to T=9."""
    gen = torch.Generator().manual_seed(7)
    lengths = torch.tensor([9, 5, 9, 3])
    mask = torch.arange(9)[None, :] < lengths[:, None]
    x = torch.randn(4, 9, 5, generator=gen, dtype=torch.float64) * mask[..., None]
    return Batch(x, mask, lengths)


def half(batch: Batch, rank: int) -> Batch:
    rows = slice(rank * HALF, (rank + 1) * HALF)
    return Batch(batch.x[rows], batch.mask[rows], batch.lengths[rows])


def make_objective():
    torch.manual_seed(0)
    return build_objective(small_config(input_dim=5, emission="gaussian"), "backward", kl="sampled").double()


def ddp_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    pyro.enable_validation(False)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        objective = make_objective()
        loss_module = distributed.wrap(objective, torch.device("cpu"))
        torch.manual_seed(100 + rank)  # this rank's guide noise
        loss_module(half(full_batch(), rank), WEIGHTS).backward()
        grads = {name: p.grad for name, p in objective.named_parameters()}
        torch.save({"grads": grads, "param_store": len(pyro.get_param_store())}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_average_to_the_single_process_gradient_on_the_whole_batch(tmp_path, monkeypatch):
    mp.spawn(ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]

    # single process, whole batch, and the very noise each rank drew for its half
    z_dim = small_config().z_dim
    noise = []
    for rank in (0, 1):
        torch.manual_seed(100 + rank)
        noise.append(torch.randn(HALF, 9, z_dim, dtype=torch.float64))
    eps = torch.cat(noise)
    real_randn, used = torch.randn, []

    def randn_with_the_ranks_noise(*shape, **kwargs):
        if tuple(shape[0] if len(shape) == 1 else shape) == tuple(eps.shape):
            used.append(True)
            return eps.clone()
        return real_randn(*shape, **kwargs)

    objective = make_objective()
    monkeypatch.setattr(torch, "randn", randn_with_the_ranks_noise)
    objective(full_batch(), WEIGHTS).backward()
    monkeypatch.undo()
    assert used == [True]  # the guide drew exactly the ranks' noise

    for name, p in objective.named_parameters():
        assert p.grad is not None, name
        for result in results:
            assert torch.allclose(result["grads"][name], p.grad, rtol=1e-9, atol=1e-12), name
    assert [r["param_store"] for r in results] == [0, 0]  # parameters live in the modules only


def test_torchrun_two_cpu_ranks_train_and_only_rank_zero_writes(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "run.py", "--max-steps", "3", "--device", "cpu",
           "--out", str(out), "--quiet", "--log-every", "1",
           "--rnn-dim", "8", "--emb-dim", "4", "--mlp-dim", "8", "--z-dim", "2"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    # torchrun's summary fills the tail; a rank's own words (a C++ abort, a traceback) come first
    rank_errors = [line for line in done.stderr.splitlines()
                   if any(word in line for word in ("terminate", "what()", "Error", "error"))]
    assert done.returncode == 0, "\n".join(rank_errors[:20]) + "\n...\n" + done.stderr[-1500:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "step"] == [1, 2, 3]  # one writer
    assert (out / "checkpoints" / "last.pt").exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.pt", "last.pt"]  # best: epoch 0


def test_outside_torchrun_everything_is_one_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.from_env("cpu") == distributed.SINGLE
    values = {"elbo": -3.0, "elbo_per_unit": -0.5}
    assert distributed.all_reduce_weighted(values, {"elbo": 2, "elbo_per_unit": 6}) == values
    assert distributed.from_main("runs/x") == "runs/x"


@pytest.mark.parametrize("finished, calls", [(True, ["barrier", "destroy"]), (False, ["destroy"])])
def test_shutdown_waits_for_every_rank_only_after_a_finished_run(monkeypatch, finished, calls):
    seen = []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "barrier", lambda: seen.append("barrier"))
    monkeypatch.setattr(dist, "destroy_process_group", lambda: seen.append("destroy"))
    distributed.shutdown(peers_finished=finished)
    assert seen == calls


def test_a_fixed_gpu_for_every_rank_is_refused_naming_the_flag(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="--device cuda:1"):
        distributed.from_env("cuda:1")
