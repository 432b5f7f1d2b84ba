"""Speed benchmark: CNN forward versus the converted SNN (layer and step mode), in one run.

    python tools/bench.py [--batch 64] [--T 25] [--threads 2] [--repeats 3]

Prints, for the zoo's M5 (1-D, raw waveform) and its VGG and ResNet (2-D, log-mel): CNN forward time, SNN layer-mode and
step-mode forward times, the ratios (layer / (T x CNN), with the automatic batch chunk and with the
whole batch at once; step / layer), the same for one training
step (forward + backward), peak memory of an M5 fine-tuning step, and the conversion time of a
ResNet-18-size net. Ratios are measured in one run on the same machine, so they are comparable.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import ann2snn  # noqa: E402
import zoo  # noqa: E402


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out)
        self.conv2, self.bn2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.down = (
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
            if stride != 1 or c_in != c_out else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.down(x))


class ResNet(nn.Module):
    """ResNet-18 layout ([2, 2, 2, 2] basic blocks); ``width=64`` is ResNet-18's 11 M parameters."""

    def __init__(self, n_classes: int = 10, width: int = 64, blocks: tuple[int, ...] = (2, 2, 2, 2)) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        layers, c = [], width
        for stage, n in enumerate(blocks):
            c_out = width * 2**stage
            for k in range(n):
                layers.append(BasicBlock(c, c_out, 2 if (k == 0 and stage > 0) else 1))
                c = c_out
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(c, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1).flatten(1))


def seconds(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Fastest wall time of each function over ``repeats`` rounds, after one warm-up round. The
    functions take turns within each round, so a slow spell of the machine hits all of them
    rather than one side of a ratio, and the minimum is the least disturbed measurement."""
    times: dict[str, float] = {}
    for round_ in range(repeats + 1):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if round_:
                times[name] = min(times.get(name, float("inf")), time.perf_counter() - start)
    return times


def whole_batch(snn: ann2snn.SpikingNetwork, x: torch.Tensor) -> None:
    """The SNN in layer mode without batch chunking (for comparison with the automatic chunks)."""
    chunk, snn.batch_chunk = snn.batch_chunk, x.shape[0]
    try:
        snn(x)
    finally:
        snn.batch_chunk = chunk


def in_mode(snn: ann2snn.SpikingNetwork, mode: str, x: torch.Tensor) -> None:
    previous, snn.mode = snn.mode, mode
    try:
        snn(x)
    finally:
        snn.mode = previous


def train_step(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    y = torch.zeros(x.shape[0], dtype=torch.long)

    def run() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    return run


def bench_net(name: str, cnn: nn.Module, x: torch.Tensor, T: int, repeats: int) -> dict[str, float]:
    cnn.eval()
    snn = ann2snn.convert(cnn, T=T, learn_tau=True, calibration=[x])
    snn.mode = "layer"
    with torch.no_grad():
        row = seconds(
            {"cnn": lambda: cnn(x), "layer": lambda: snn(x), "layer_whole": lambda: whole_batch(snn, x), "step": lambda: in_mode(snn, "step", x)},
            repeats,
        )
    cnn.train()
    row.update(seconds({"cnn_train": train_step(cnn, x), "layer_train": train_step(snn, x)}, repeats))
    print(
        f"{name:8s} CNN fwd {row['cnn'] * 1e3:8.1f} ms | SNN layer {row['layer'] * 1e3:8.1f} ms, step {row['step'] * 1e3:8.1f} ms | "
        f"layer/(T*CNN) {row['layer'] / (T * row['cnn']):5.2f} (chunks of {snn.chunk_size(x)}; whole batch "
        f"{row['layer_whole'] / (T * row['cnn']):5.2f})  step/layer {row['step'] / row['layer']:5.2f} | "
        f"train step: CNN {row['cnn_train'] * 1e3:7.1f} ms, SNN layer {row['layer_train'] * 1e3:8.1f} ms, "
        f"SNN/(T*CNN) {row['layer_train'] / (T * row['cnn_train']):5.2f}"
    )
    return row


def reset_peak_rss() -> None:
    """Linux counts a forked child's peak memory from its parent's; reset it where the kernel allows."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--T", type=int, default=25)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-probe", choices=("idle", "train"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_probe:
        memory_probe(args)
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"batch {args.batch}, T={args.T}, {args.threads} threads, torch {torch.__version__}")
    for name in ("m5", "vgg", "resnet"):  # the zoo's nets at their FSDD input shapes
        model = zoo.create(name, n_classes=10)
        bench_net(name, model, torch.randn(args.batch, *model.input_spec.shape), args.T, args.repeats)

    resnet18 = ResNet(width=64).eval()
    calibration = [torch.randn(8, 1, 64, 64)]
    start = time.perf_counter()
    ann2snn.convert(resnet18, T=args.T, learn_tau=True)
    plain = time.perf_counter() - start
    start = time.perf_counter()
    ann2snn.convert(resnet18, T=args.T, learn_tau=True, calibration=calibration)
    calibrated = time.perf_counter() - start
    params = sum(p.numel() for p in resnet18.parameters()) / 1e6
    print(f"conversion of a ResNet-18-size net ({params:.1f} M parameters): {plain:.2f} s (with calibration on 8 inputs: {calibrated:.2f} s)")

    baseline = memory_in_child(args, train=False)
    peak = memory_in_child(args, train=True)
    print(
        f"peak resident memory of a fresh process doing one M5 SNN fine-tuning step (batch {args.batch}, T={args.T}): "
        f"{peak:.0f} MB ({peak - baseline:.0f} MB above the same process converting and running no step)"
    )


def memory_in_child(args: argparse.Namespace, train: bool) -> float:
    """Peak resident memory (MB) of a new process that converts an M5 and, with ``train``, runs one
    fine-tuning step: a fresh process, so earlier benchmarks do not set the peak."""
    command = [sys.executable, __file__, "--memory-probe", "train" if train else "idle", "--batch", str(args.batch), "--T", str(args.T), "--threads", str(args.threads)]
    return float(subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()[-1])


def memory_probe(args: argparse.Namespace) -> None:
    reset_peak_rss()
    torch.set_num_threads(args.threads)
    x = torch.randn(args.batch, 1, 8000)
    snn = ann2snn.convert(zoo.create("m5", n_classes=10).eval(), T=args.T, learn_tau=True, calibration=[x])
    if args.memory_probe == "train":
        train_step(snn, x)()
    print(peak_rss_mb())


if __name__ == "__main__":
    main()
