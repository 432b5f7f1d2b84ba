"""DistributedDataParallel in the harness: two gloo processes on the CPU train a seeded model with
``zoo.harness.fit``. Each rank must read its own half of the training data every epoch, the
optimiser must step once per batch, both ranks must end with the same weights, and those weights
must differ from the seeded initial ones (parameters only: BN running statistics change even
without a single optimiser step)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
import ddp_worker as worker  # noqa: E402

sys.path.remove(str(HERE))

WORLD = 2
pytestmark = pytest.mark.slow  # two processes importing torch: 10 to 30 s on 2 busy cores


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> tuple[list[dict], dict]:
    out = tmp_path_factory.mktemp("ddp")
    port = str(free_port())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "WORLD_SIZE": str(WORLD),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    processes = [
        subprocess.Popen(
            [sys.executable, str(HERE / "ddp_worker.py"), str(out)], env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )  # fmt: skip
        for r in range(WORLD)
    ]
    try:
        outputs = [p.communicate(timeout=240)[0] for p in processes]
    finally:
        for p in processes:
            p.kill()
    for r, (p, text) in enumerate(zip(processes, outputs)):
        assert p.returncode == 0, f"rank {r} failed:\n{text[-3000:]}"
    results = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    return results, torch.load(out / "checkpoint.pt", weights_only=True)


def test_each_rank_reads_a_disjoint_half_of_the_training_data_every_epoch(ranks):
    results, _ = ranks
    per_rank = worker.N_TRAIN // WORLD
    for r, result in enumerate(results):
        assert len(result["read"]) == worker.EPOCHS * per_rank, f"rank {r} read {len(result['read'])} examples"
    for epoch in range(worker.EPOCHS):
        seen = [set(result["read"][epoch * per_rank : (epoch + 1) * per_rank]) for result in results]
        assert all(len(s) == per_rank for s in seen), "a rank read an example twice in one epoch"
        assert not seen[0] & seen[1], f"epoch {epoch + 1}: both ranks read examples {sorted(seen[0] & seen[1])}"
        assert seen[0] | seen[1] == set(range(worker.N_TRAIN))


def test_the_optimiser_steps_once_per_batch(ranks):
    _, checkpoint = ranks
    steps = worker.EPOCHS * (worker.N_TRAIN // WORLD // worker.BATCH)
    state = checkpoint["optimizer"]["state"]
    assert len(state) == len(list(worker.model().parameters())), "the optimiser holds no state for some parameters: it never stepped"
    assert all(float(s["step"]) == steps for s in state.values())
    assert checkpoint["scheduler"]["_step_count"] == steps + 1  # OneCycleLR counts its construction


def test_both_ranks_start_from_the_seeded_model_and_end_trained_and_equal(ranks):
    results, checkpoint = ranks
    torch.manual_seed(worker.SEED)
    seeded = worker.model().state_dict()
    parameters = [name for name, _ in worker.model().named_parameters()]
    for r, result in enumerate(results):
        for name, value in seeded.items():
            assert torch.equal(result["initial"][name], value), f"rank {r} started from other weights ({name})"
    for key in results[0]["final"]:
        assert torch.equal(results[0]["final"][key], results[1]["final"][key]), f"the ranks end with different {key}"
    for weights in (results[0]["final"], checkpoint["state_dict"]):  # the best epoch's and the last epoch's
        unchanged = [name for name in parameters if torch.equal(weights[name], seeded[name])]
        assert not unchanged, f"parameters {unchanged} equal their seeded initial values: not trained"
