"""Training-speed check: `python -m ann2snn_zoo.speed` prints, per model, the parameter count and the
time of one forward + backward pass at batch 64 on the default FSDD input, the estimated epoch
time on FSDD's 2,700 training clips, and the synthetic set's generation time."""

import time

import torch
import torch.nn.functional as F

from ann2snn.cli_messages import OneLineParser
import ann2snn_zoo as zoo
from ann2snn_zoo.data.synthetic import Synthetic
from ann2snn_zoo.harness.train_cli import positive_int

FSDD_TRAIN_CLIPS = 2700


def time_train_step(model: torch.nn.Module, batch: int, repeats: int) -> float:
    """Fastest of `repeats` timed forward + backward + SGD steps on random input (the minimum
    is the least disturbed by other work on the machine)."""
    x = torch.randn(batch, *model.input_spec.shape)
    y = torch.randint(10, (batch,))
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01)
    times = []
    for _ in range(repeats + 2):  # the first two are warm-up
        start = time.perf_counter()
        optimiser.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimiser.step()
        times.append(time.perf_counter() - start)
    return min(times[2:])


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(prog="python -m ann2snn_zoo.speed", description=__doc__)
    parser.add_argument("--batch", type=positive_int, default=64, help="examples per training step (default: %(default)s)")
    parser.add_argument("--repeats", type=positive_int, default=10, help="timed steps after two warm-up steps; the fastest counts (default: %(default)s)")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}")
    for name in zoo.names():
        model = zoo.create(name, n_classes=10)
        params = sum(p.numel() for p in model.parameters())
        step = time_train_step(model, args.batch, args.repeats)
        epoch = step * -(-FSDD_TRAIN_CLIPS // args.batch)
        print(f"{name:8s} input {model.input_spec.shape}  params {params:>8,d}  train step {step * 1e3:6.1f} ms  FSDD epoch ~{epoch:5.1f} s")
    start = time.perf_counter()
    sizes = {split: len(Synthetic(split)) for split in ("train", "val", "test")}
    print(f"synthetic set {sizes}: generated in {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
