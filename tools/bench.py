"""Speed and memory benchmark: the converted SNN against T forward passes of its CNN, in one run.

    python tools/bench.py                      # full grid: m5, vgg, resnet x T {4,16,64,256} x batch {1,16,64,256}
    python tools/bench.py --quick              # a subset: T {4,16,64} x batch {16,64}
    python tools/bench.py --nets m5 --T 16 64 256 --batch 64 --threads 1

Each row is one (net, T, batch) cell of the zoo's nets at their FSDD input shapes, random weights
and inputs (speed does not depend on them: every op is dense):

- ``fwd``: SNN layer-mode forward / (T x CNN forward), inference (``torch.no_grad``), with the
  automatic chunking (``chunks`` says how: examples per batch slice x steps per time chunk); and
  ``unchunked``: the same with the whole batch and all T steps at once;
- ``pool_static_input`` (with ``--approx``): inference with that approximation switched on;
- ``train``: one SNN fine-tuning step (forward + backward through time, learnable time
  constants) / (T x one CNN training step);
- ``train compiled`` (with ``--compiled``): the same with ``snn.compiled_neurons`` (each neuron
  step one ``torch.compile`` kernel; compiled before the timing rounds, not timed);
- ``mem``: peak resident memory (MB) of one SNN inference call and of one training step above
  the process's memory before the call (glibc's free lists trimmed first; on a GPU, the
  allocator's peak);
- at batch 1, ``step``: step mode (streaming, one ``snn.step`` per call) per step / one CNN forward.

Times are wall time, or with one thread on the CPU the process's CPU time (``--clock``), which
other jobs on a shared machine disturb less.

Ratios are taken within one run on one machine, so they compare; absolute times do not travel.
The CNN is timed in every row, taking turns with the SNN; a net's rows at one batch size are
printed together, over the fastest CNN time of all of them (its work does not depend on T).
Functions take turns within each timing round, so a slow spell of the machine hits both sides of
a ratio; the fastest round counts. Cells whose estimated training memory exceeds ``--max-gb``, or
whose estimated SNN time exceeds ``--max-seconds``, are skipped with a note. Peers (SpikingJelly,
sinabs, converted by ``zoo.harness.peers``, inference on direct input, T steps) get a column each
where installed, as the same kind of ratio; a note says which are missing.
"""

from __future__ import annotations

import argparse
import ctypes
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import ann2snn  # noqa: E402
from ann2snn.cli_messages import OneLineParser  # noqa: E402
import ann2snn_zoo as zoo  # noqa: E402
from ann2snn_zoo.harness.train import device_problem  # noqa: E402
from ann2snn_zoo.harness.train_cli import LIST_FORM, list_flag, positive_int  # noqa: E402

FULL = dict(nets=["m5", "vgg", "resnet"], T=[4, 16, 64, 256], batch=[1, 16, 64, 256])
QUICK = dict(nets=["m5", "vgg", "resnet"], T=[4, 16, 64], batch=[16, 64])


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out)
        self.conv2, self.bn2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.down = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)) if stride != 1 or c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.down(x))


class ResNet18(nn.Module):
    """ResNet-18 layout ([2, 2, 2, 2] basic blocks, 11 M parameters): for the conversion time only."""

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


# -- timing and memory -----------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


_LIBC = None

#: The clock that times each call (``--clock``): wall time, or this process's CPU time, which on
#: a machine shared with other jobs is less disturbed by them (one thread: the same as wall time
#: on an idle machine).
CLOCK: Callable[[], float] = time.perf_counter


def _trim() -> None:
    """Return glibc's free heap to the system, so the next call's peak is measured from what is in use."""
    global _LIBC
    try:
        _LIBC = _LIBC or ctypes.CDLL("libc.so.6")
        _LIBC.malloc_trim(0)
    except OSError:
        pass


def _rss_kb(field: str) -> Optional[int]:
    status = Path("/proc/self/status")
    if not status.is_file():
        return None
    for line in status.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def peak_mb(fn: Callable[[], object], device: torch.device) -> float:
    """Run ``fn`` once; its peak memory (MB) above what was in use before (NaN where unmeasurable)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    _trim()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current RSS
    except OSError:
        fn()
        return math.nan
    before = _rss_kb("VmRSS")
    fn()
    peak = _rss_kb("VmHWM")
    return math.nan if before is None or peak is None else (peak - before) / 1024


def timed(fns: dict[str, Callable[[], object]], repeats: int, device: torch.device, memory: set[str] = frozenset(), inner: dict[str, int] = {}) -> tuple[dict[str, float], dict[str, float]]:
    """Fastest wall time of each function over up to ``repeats`` rounds after a warm-up round (the
    warm-up measures peak memory for the functions in ``memory``); ``inner``: calls per round
    (each timed) for short functions. Functions take turns within a round; a round is not
    repeated once the warm-up of everything took over a minute."""
    times: dict[str, float] = {}
    peaks: dict[str, float] = {}
    start = time.perf_counter()
    for name, fn in fns.items():  # warm-up round
        peaks[name] = peak_mb(fn, device) if name in memory else (fn(), math.nan)[1]
    rounds = repeats if time.perf_counter() - start < 60 else 1
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(inner.get(name, 1)):
                _sync(device)
                t0 = CLOCK()
                fn()
                _sync(device)
                times[name] = min(times.get(name, math.inf), CLOCK() - t0)
    return times, peaks


# -- the SNN under test ----------------------------------------------------------------------------
def chunking(snn: ann2snn.SpikingNetwork, x: torch.Tensor) -> str:
    """How layer mode splits this input: examples per batch slice x steps per time chunk."""
    plan = getattr(snn, "chunk_plan", None)
    if plan is not None:
        examples, steps = plan(x)
        return f"{examples}x{steps}"
    return f"{min(snn.chunk_size(x), x.shape[0])}x{snn.T}"


def unchunked(snn: ann2snn.SpikingNetwork, x: torch.Tensor) -> Callable[[], object]:
    """The SNN in layer mode with the whole batch and all T steps at once."""

    def run() -> object:
        saved = snn.batch_chunk, getattr(snn, "time_chunk", None)
        snn.batch_chunk = x.shape[0]
        if hasattr(snn, "time_chunk"):
            snn.time_chunk = snn.T
        try:
            return snn(x)
        finally:
            snn.batch_chunk = saved[0]
            if hasattr(snn, "time_chunk"):
                snn.time_chunk = saved[1]

    return run


def approximate(snn: ann2snn.SpikingNetwork, x: torch.Tensor) -> Callable[[], object]:
    """The SNN with the ``pool_static_input`` approximation (off by default)."""

    def run() -> object:
        snn.pool_static_input = True
        try:
            return snn(x)
        finally:
            snn.pool_static_input = False

    return run


def streamed(snn: ann2snn.SpikingNetwork, x: torch.Tensor) -> Callable[[], object]:
    def run() -> None:
        snn.reset()
        for _ in range(snn.T):
            snn.step(x)
        snn.reset()

    return run


def train_step(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    y = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)

    def run() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    return run


def compiled_train_step(snn: ann2snn.SpikingNetwork, x: torch.Tensor) -> Callable[[], None]:
    """``train_step`` with ``snn.compiled_neurons`` on during the call; one untimed call first
    compiles the kernels."""
    step = train_step(snn, x)

    def run() -> None:
        snn.compiled_neurons = True
        try:
            step()
        finally:
            snn.compiled_neurons = False

    with torch.enable_grad():
        run()
    return run


def activation_bytes(cnn: nn.Module, example: torch.Tensor) -> int:
    """Bytes of all activations of one example in one CNN forward (for the memory estimate)."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel() * output.element_size()

    handles = [m.register_forward_hook(hook) for m in cnn.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            cnn(example)
    finally:
        for h in handles:
            h.remove()
    return total


def convert(cnn: nn.Module, x: torch.Tensor, learn_tau: bool, maxpool: str = "gated") -> ann2snn.SpikingNetwork:
    """Per-channel 99.9th-percentile thresholds without correction: fast to convert, and the
    settings do not change the dense work that is timed. ``maxpool``: as ``convert``'s."""
    return ann2snn.convert(cnn, T=16, learn_tau=learn_tau, calibration=[x], percentile=99.9, per_channel=True, correction="none", maxpool=maxpool)


def bench_net(name: str, args: argparse.Namespace, device: torch.device) -> None:
    torch.manual_seed(0)
    cnn = zoo.create(name, n_classes=10).to(device).eval()
    shape = tuple(cnn.input_spec.shape)
    calibration = torch.randn(16, *shape, device=device)
    inference = convert(cnn, calibration, learn_tau=False, maxpool=args.maxpool).eval()  # IF neurons
    training = convert(cnn, calibration, learn_tau=True, maxpool=args.maxpool).train()  # fine-tuning: learnable time constants
    per_example = activation_bytes(cnn, calibration[:1])
    peers = convert_peers(cnn, calibration, args)
    for batch in args.batch:
        x = torch.randn(batch, *shape, device=device)
        with torch.no_grad():
            estimate, _ = timed({"cnn": lambda: cnn(x)}, 2, device)
        measured = [row(name, T, x, cnn, inference, training, estimate["cnn"], per_example, args, device, peers) for T in args.T]
        measured = [m for m in measured if m is not None]
        best = {key: min(m["times"][key] for m in measured if key in m["times"]) for key in ("cnn", "cnn_train") if any(key in m["times"] for m in measured)}
        for m in measured:
            print_row(m, best)


def cnn_train_step(cnn: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """One CNN training step (batch-norm statistics as in training), leaving the CNN in eval mode."""
    step = train_step(cnn, x)

    def run() -> None:
        cnn.train()
        try:
            step()
        finally:
            cnn.eval()

    return run


def row(name, T, x, cnn, inference, training, cnn_estimate, per_example, args, device, peers=None) -> Optional[dict]:
    """Measure one cell (None if skipped); the CNN's own times are measured in the same rounds,
    taking turns with the SNN's."""
    batch = x.shape[0]
    label = f"{name:6s} T={T:<4d} B={batch:<4d}"
    peers = peers or {}
    estimate_s = T * cnn_estimate * (3 + (3 if args.unchunked else 0) + (2 if args.approx else 0) + (0 if args.no_train else 8) + (8 if args.compiled and not args.no_train else 0) + 3 * len(peers))
    if estimate_s > args.max_seconds:
        print(f"{label} skipped: about {estimate_s:.0f} s per round estimated (over --max-seconds {args.max_seconds:g})", flush=True)
        return None
    inference.T = training.T = T
    fns = {"cnn": lambda: cnn(x), "fwd": lambda: inference(x)}
    if args.unchunked:
        fns["unchunked"] = unchunked(inference, x)
    if args.approx and hasattr(inference, "pool_static_input"):
        fns["approx"] = approximate(inference, x)
    train_gb = 1.5 * T * batch * per_example / 2**30
    if train_gb <= args.max_gb and not args.no_train:
        fns["cnn_train"] = cnn_train_step(cnn, x)
        fns["train"] = train_step(training, x)
        if args.compiled:
            fns["train compiled"] = compiled_train_step(training, x)
    if batch == 1 and not args.no_step:
        fns["step"] = streamed(inference, x)
    for peer_name, peer in peers.items():
        peer.T = T
        fns[f"peer {peer_name}"] = lambda peer=peer: peer(x)
    with torch.no_grad():
        # inference under no_grad; the training step enables gradients itself
        def grad_on(fn):
            def run():
                with torch.enable_grad():
                    return fn()

            return run

        for key in ("cnn_train", "train", "train compiled"):
            if key in fns:
                fns[key] = grad_on(fns[key])
        times, peaks = timed(fns, args.repeats, device, memory={"fwd", "train"}, inner={"cnn": 5, "cnn_train": 3})
    print(f"  ({label.strip()} measured)", flush=True)
    return dict(label=label, T=T, times=times, peaks=peaks, train_gb=train_gb, chunks=chunking(inference, x), no_train=args.no_train)


def print_row(measured: dict, cnn: dict[str, float]) -> None:
    """One row: each SNN time over T x the CNN's time, the fastest CNN time measured over all rows
    of this net and batch (the CNN's work does not depend on T; more samples, less noise)."""
    label, T, times, peaks, train_gb = (measured[k] for k in ("label", "T", "times", "peaks", "train_gb"))
    parts = [
        f"fwd {times['fwd'] / (T * cnn['cnn']):5.2f} (chunks {measured['chunks']})",
    ]
    if "unchunked" in times:
        parts.append(f"unchunked {times['unchunked'] / (T * cnn['cnn']):5.2f}")
    if "approx" in times:
        parts.append(f"pool_static_input {times['approx'] / (T * cnn['cnn']):5.2f}")
    if "train" in times:
        parts.append(f"train {times['train'] / (T * cnn['cnn_train']):5.2f}")
    else:
        parts.append(f"train skipped (~{train_gb:.0f} GB)" if not measured["no_train"] else "train -")
    if "train compiled" in times:
        parts.append(f"train compiled {times['train compiled'] / (T * cnn['cnn_train']):5.2f}")
    if "step" in times:
        parts.append(f"step {times['step'] / (T * cnn['cnn']):5.2f}")
    for key in times:
        if key.startswith("peer "):
            parts.append(f"{key.removeprefix('peer ')} {times[key] / (T * cnn['cnn']):5.2f}")
    mem = f"mem fwd {peaks['fwd']:6.0f} MB" + (f", train {peaks['train']:6.0f} MB" if "train" in peaks else "")
    ms = f"[CNN {cnn['cnn'] * 1e3:.2f} ms (this row {times['cnn'] * 1e3:.2f}), SNN {times['fwd'] * 1e3:.1f} ms = {times['fwd'] / T * 1e3:.2f} ms/step]"
    print(f"{label} " + " | ".join(parts) + f" | {mem} {ms}", flush=True)


def peer_converters() -> tuple[dict[str, Callable], list[str]]:
    """The peers' converters that can run here (``zoo.harness.peers``), and notes on the others."""
    try:
        from ann2snn_zoo.harness import peers
    except ImportError as error:
        return {}, [f"peers: zoo.harness.peers unavailable ({error}): no peer columns"]
    converters = {"SpikingJelly 99.9": peers.convert_spikingjelly, "sinabs": peers.convert_sinabs}
    notes = [note for name in converters if (note := peers.missing(name))]
    return {name: fn for name, fn in converters.items() if not peers.missing(name)}, notes


def convert_peers(cnn: nn.Module, calibration: torch.Tensor, args: argparse.Namespace) -> dict[str, nn.Module]:
    """Each available peer's SNN of ``cnn`` (inference; a column ``name ratio`` in every row)."""
    if args.no_peers:
        return {}
    converters, _ = peer_converters()
    snns = {}
    for name, convert_peer in converters.items():
        try:
            snns[name] = convert_peer(cnn, [calibration], 16)
        except Exception as error:  # a peer that cannot convert this net: say so, keep going
            print(f"  {name} could not convert this net: {type(error).__name__}: {error}", flush=True)
    return snns


def conversion_time(T: int) -> None:
    resnet18 = ResNet18(width=64).eval()
    start = time.perf_counter()
    ann2snn.convert(resnet18, T=T, learn_tau=True)
    plain = time.perf_counter() - start
    start = time.perf_counter()
    ann2snn.convert(resnet18, T=T, learn_tau=True, calibration=[torch.randn(8, 1, 64, 64)])
    calibrated = time.perf_counter() - start
    params = sum(p.numel() for p in resnet18.parameters()) / 1e6
    print(f"conversion of a ResNet-18-size net ({params:.1f} M parameters): {plain:.2f} s (with calibration on 8 inputs: {calibrated:.2f} s)")


# -- the command line ------------------------------------------------------------------------------
def number(minimum: float, inclusive: bool) -> Callable[[str], float]:
    """argparse type: a finite number above ``minimum`` (or equal to it, if ``inclusive``)."""
    words = f"{'at least' if inclusive else 'above'} {minimum:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number {words}, got {text!r}") from None
        if not math.isfinite(value) or value < minimum or (value == minimum and not inclusive):
            raise argparse.ArgumentTypeError(f"must be a finite number {words}, got {text}")
        return value

    return parse


def device_name(text: str) -> torch.device:
    """argparse type: cpu, or a CUDA device this machine has (cuda, cuda:1, ...)."""
    problem = device_problem(text, kinds=("cpu", "cuda"), allow_auto=False)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return torch.device(text)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``tools/bench.py``."""
    parser = OneLineParser(prog="bench.py", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the subset T {4,16,64} x batch {16,64} (unless --T / --batch say otherwise)")
    parser.add_argument("--nets", **list_flag(choices=FULL["nets"]), metavar="NET", help=f"zoo nets to measure, {LIST_FORM}: {', '.join(FULL['nets'])} (default: all)")
    parser.add_argument("--T", **list_flag(positive_int), metavar="T", help=f"time steps, each above 0, {LIST_FORM}, e.g. 16 64 256 or 16,64,256 (default: the grid's)")
    parser.add_argument("--batch", **list_flag(positive_int), metavar="B", help=f"batch sizes, each above 0, {LIST_FORM} (default: the grid's)")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch's CPU threads (default: %(default)s)")
    parser.add_argument("--repeats", type=positive_int, default=3, help="timing rounds after the warm-up; the fastest counts (default: %(default)s)")
    parser.add_argument("--device", type=device_name, default="cpu", help="cpu, cuda or cuda:N (default: %(default)s)")
    parser.add_argument("--unchunked", action="store_true", help="also time layer mode with the whole batch and all T steps at once")
    parser.add_argument("--no-train", action="store_true", help="skip the training-step column (one SNN fine-tuning step over T CNN training steps)")
    parser.add_argument("--maxpool", choices=["gated", "avg"], default="gated", help="how max pools convert (avg: average pools, which VGG and M5 then run; default: %(default)s)")
    parser.add_argument("--approx", action="store_true", help="also time inference with snn.pool_static_input (an approximation, off by default)")
    parser.add_argument("--compiled", action="store_true", help="also time the training step with snn.compiled_neurons (torch.compile kernels; compiled first, untimed)")
    parser.add_argument("--no-step", action="store_true", help="skip the streaming (step mode) column at batch 1")
    parser.add_argument("--no-peers", action="store_true", help="skip the peers' columns (SpikingJelly, sinabs: where installed)")
    parser.add_argument("--max-gb", type=number(0, inclusive=True), default=6.0, help="skip training steps estimated to need more memory (default: %(default)s)")
    parser.add_argument("--max-seconds", type=number(0, inclusive=False), default=600.0, help="skip cells estimated to take longer per round (default: %(default)s)")
    parser.add_argument("--conversion", action="store_true", help="also time converting a ResNet-18-size net")
    parser.add_argument(
        "--clock",
        choices=("auto", "wall", "cpu"),
        default="auto",
        help="wall time, or the process's CPU time (auto: CPU time with one thread on the CPU, wall time otherwise; default: %(default)s)",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    global CLOCK
    device = args.device
    cpu_clock = args.clock == "cpu" or (args.clock == "auto" and args.threads == 1 and device.type == "cpu")
    CLOCK = time.process_time if cpu_clock else time.perf_counter
    grid = QUICK if args.quick else FULL
    args.nets = args.nets or grid["nets"]
    args.T = args.T or grid["T"]
    args.batch = args.batch or grid["batch"]
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")  # stale-calibration warnings: T changes on purpose here
    print(
        f"{args.threads} thread(s), {device}, {'process CPU' if cpu_clock else 'wall'} time, torch {torch.__version__}; ratios: SNN / (T x CNN) in this run; "
        f"inference: IF neurons; train: learnable time constants; max pools {args.maxpool}; nets {args.nets}, T {args.T}, batch {args.batch}",
        flush=True,
    )
    _, notes = peer_converters()
    for note in notes if not args.no_peers else ["peers: skipped (--no-peers)"]:
        print(note, flush=True)
    for name in args.nets:
        bench_net(name, args, device)
    if args.conversion:
        conversion_time(16)


if __name__ == "__main__":
    main()
