"""One rank of the two-process DDP test (``test_ddp.py`` starts two of these with RANK, WORLD_SIZE,
MASTER_ADDR and MASTER_PORT set): trains a small seeded CNN with ``zoo.harness.fit`` on synthetic
data under gloo, recording which training examples this rank read, and writes
OUT/rank{RANK}.pt with the initial and final weights and those indices."""

import sys
from pathlib import Path

import torch
from torch import nn

from ann2snn_zoo.harness.distributed import distributed
from ann2snn_zoo.harness.train import TrainConfig, fit, seed_everything

N_TRAIN, EPOCHS, BATCH, SEED = 40, 2, 4, 7


class Recording(torch.utils.data.Dataset):
    """A TensorDataset that records the index of every example read."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y, self.read = x, y, []

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        self.read.append(int(i))
        return self.x[i], self.y[i]


def data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, 1, 32, generator=g) + y[:, None, None].float()
    return x, y


def model() -> nn.Module:
    return nn.Sequential(nn.Conv1d(1, 4, 5), nn.BatchNorm1d(4), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(4, 3))


def main(out: Path) -> None:
    with distributed(torch.device("cpu")) as rank:
        seed_everything(SEED)  # as tools/train.py: every rank builds the same initial model
        net = model()
        initial = {k: v.clone() for k, v in net.state_dict().items()}
        train = Recording(*data(N_TRAIN, 1))
        val = torch.utils.data.TensorDataset(*data(12, 2))
        config = TrainConfig(epochs=EPOCHS, lr=1e-2, batch_size=BATCH, seed=SEED, device="cpu", progress=False)
        fit(net, train, val, config, checkpoint=out / "checkpoint.pt", log=lambda _: None)
        torch.save({"initial": initial, "final": net.state_dict(), "read": train.read}, out / f"rank{rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
