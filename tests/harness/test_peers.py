"""Peer converters (zoo.harness.peers): SpikingJelly and sinabs on a tiny 1-D CNN trained here."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ann2snn_zoo.harness import peers


class TinyCNN(nn.Module):
    """Conv + BN + functional ReLUs + average pooling, as the zoo nets are written (SpikingJelly
    refuses functional pooling, so the pool is a module)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, 8, 5)
        self.bn1 = nn.BatchNorm1d(8)
        self.pool = nn.AvgPool1d(2)
        self.conv2 = nn.Conv1d(8, 8, 3)
        self.bn2 = nn.BatchNorm1d(8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean(-1))


def _data(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Three classes of noisy sines of different frequencies, 48 samples long."""
    y = torch.randint(0, 3, (n,), generator=generator)
    t = torch.arange(48.0)
    phase = torch.rand(n, 1, generator=generator) * 6.28
    x = torch.sin(t * (0.3 + 0.5 * y[:, None]) + phase) + 0.2 * torch.randn(n, 48, generator=generator)
    return x[:, None], y


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    cnn = TinyCNN()
    x, y = _data(512, g)
    optimiser = torch.optim.Adam(cnn.parameters(), lr=1e-2)
    for step in range(50):
        batch = slice(64 * (step % 8), 64 * (step % 8 + 1))
        optimiser.zero_grad()
        F.cross_entropy(cnn(x[batch]), y[batch]).backward()
        optimiser.step()
    cnn.eval()
    test, _ = _data(200, g)
    calibration = [x[i : i + 64] for i in range(0, 256, 64)]
    return cnn, calibration, test


def test_relu_modules_turns_functional_relus_into_modules_and_keeps_the_function(trained):
    cnn, _, test = trained
    gm = peers.relu_modules(cnn)
    assert sum(isinstance(m, nn.ReLU) for m in gm.modules()) == 2
    assert not any(n.op == "call_function" and n.target in (F.relu, torch.relu) for n in gm.graph.nodes)
    torch.testing.assert_close(gm(test), cnn(test))


def _agreement(snn: nn.Module, cnn: nn.Module, x: torch.Tensor) -> float:
    return (snn(x).argmax(1) == cnn(x).argmax(1)).float().mean().item()


def test_spikingjelly_runs_and_agrees_with_the_cnn_at_large_T(trained):
    pytest.importorskip("spikingjelly")
    cnn, calibration, test = trained
    snn = peers.convert_peer("SpikingJelly 99.9", cnn, calibration, T=4)
    out = snn(test[:10])
    assert out.shape == (10, 3) and torch.isfinite(out).all()
    torch.testing.assert_close(snn(test[:10]), out)  # state is reset between calls
    assert _agreement(peers.convert_peer("SpikingJelly 99.9", cnn, calibration, T=64), cnn, test) >= 0.9


def test_spikingjelly_multi_step_equals_its_step_by_step_loop(trained):
    functional = pytest.importorskip("spikingjelly.activation_based.functional")
    cnn, calibration, test = trained
    snn = peers.convert_spikingjelly(cnn, calibration, T=8)
    functional.set_step_mode(snn.net, "s")
    functional.reset_net(snn.net)
    steps = torch.stack([snn.net(test[:20]) for _ in range(8)]).mean(0)
    functional.set_step_mode(snn.net, "m")
    torch.testing.assert_close(snn(test[:20]), steps)


def test_sinabs_runs_and_agrees_with_the_cnn_at_large_T(trained):
    pytest.importorskip("sinabs")
    cnn, calibration, test = trained
    snn = peers.convert_peer("sinabs", cnn, calibration, T=4)
    out = snn(test[:10])
    assert out.shape == (10, 3) and torch.isfinite(out).all()
    torch.testing.assert_close(snn(test[:7])[:7], out[:7])  # another batch size starts from zero too
    assert set(snn.settings["scales"]) == {"relu_0", "relu_1"} and all(s > 0 for s in snn.settings["scales"].values())
    assert _agreement(peers.convert_peer("sinabs", cnn, calibration, T=64), cnn, test) >= 0.9


def test_missing_peer_gives_a_note(monkeypatch):
    monkeypatch.setattr(peers.importlib.util, "find_spec", lambda name: None)
    note = peers.missing("sinabs")
    assert note and "not installed" in note and "sinabs" in note
    with pytest.raises(ImportError, match="not installed"):
        peers.convert_peer("sinabs", TinyCNN(), [], T=4)
    with pytest.raises(ValueError, match="unknown peer"):
        peers.missing("snntorch")


@pytest.mark.slow
def test_lowt_measures_peer_cells_beside_the_cnns_and_reruns_skip(tmp_path):
    pytest.importorskip("spikingjelly")
    pytest.importorskip("sinabs")
    from ann2snn_zoo.harness.lowt import LowTConfig, lowt_tables, plot_lowt, run_lowt

    config = LowTConfig(
        dataset="synthetic", models=("m5",), seeds=(0,), T=(2, 4), levels=4, out_dir=str(tmp_path), cnn_epochs=1,
        max_batches=2, cnn_training={}, augment={}, peers=True, only_peers=True,
    )  # fmt: skip
    rows = run_lowt(config, log=lambda _: None)
    measured = [r for r in rows if r["T"] is not None]
    assert {(r["method"], r["T"]) for r in measured} == {(p, t) for p in peers.PEERS for t in (2, 4)}
    assert all(0 <= r["top1"] <= 100 and r["forward_s"] > 0 and r["peer"].split()[0] in ("spikingjelly", "sinabs") for r in measured)
    assert run_lowt(config, log=lambda _: None) == rows  # cached in results.jsonl
    table = lowt_tables(rows, config.T)
    assert "| m5 | SpikingJelly 99.9 |" in table and "| m5 | sinabs |" in table
    assert "bias correction" not in table  # not measured with only_peers
    assert table.split("Time to accuracy")[1].count("| m5 |") == 2
    plot_lowt(rows, config.T, tmp_path / "lowt.png", "test")
    assert (tmp_path / "lowt.png").read_bytes()[:4] == b"\x89PNG"
