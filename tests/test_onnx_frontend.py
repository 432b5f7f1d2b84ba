"""ONNX models as input (issue 13): exported inside the test from a zoo net and torchvision nets,
imported through onnx2torch (optional: skipped without it) and converted with the same passes."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ann2snn
from ann2snn import ConversionError

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnx2torch")

from ann2snn.onnx_frontend import convert_onnx, load_onnx, onnx_input_shape  # noqa: E402


def export(model: nn.Module, x: torch.Tensor, opset: int | None = 17, dynamic: dict | None = None) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(
            model.eval(),
            (x,),
            buffer,
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
            opset_version=opset,
            dynamic_axes=dynamic or {"x": {0: "batch"}, "y": {0: "batch"}},
        )
    return buffer.getvalue()


def analog_output(snn: ann2snn.SpikingNetwork, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), snn.analog_mode(), snn.without_head():
        return snn.run_network(x)


class AudioNet(nn.Module):
    """An audio CNN with BN, max pooling, global max pooling over time and a log_softmax head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, 8, 9, stride=4)
        self.bn1 = nn.BatchNorm1d(8)
        self.conv2 = nn.Conv1d(8, 8, 3)
        self.pool = nn.MaxPool1d(2)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        x = F.adaptive_max_pool1d(F.relu(self.conv2(x)), 1).flatten(1)
        return F.log_softmax(self.fc(x), -1)


def test_onnx_audio_net_converts_like_the_pytorch_model(tmp_path):
    torch.manual_seed(0)
    model = AudioNet().eval()
    x = torch.randn(16, 1, 200)
    path = tmp_path / "audio.onnx"
    path.write_bytes(export(model, x, dynamic={"x": {0: "batch", 2: "time"}, "y": {0: "batch"}}))
    snn = convert_onnx(path, T=16, learn_tau=False, calibration=[x], percentile=100.0, correction="none")
    assert snn.input_shape == (1, None)  # the time axis was dynamic in the ONNX graph: free
    assert snn.output_head == [("log_softmax", 1)] or snn.output_head == [("log_softmax", -1)]
    assert len(snn.report.neurons) == 2 and len(snn.report.by_action("pool")) == 2 and not snn.report.analog
    with torch.no_grad():
        logits = model.fc(F.adaptive_max_pool1d(F.relu(model.conv2(model.pool(F.relu(model.bn1(model.conv1(x)))))), 1).flatten(1))
        assert torch.allclose(analog_output(snn, x), logits, atol=1e-5)
        layer = snn(x)
        snn.mode = "step"
        assert torch.allclose(snn(x), layer, atol=1e-5)
        snn.mode, snn.T = "layer", 512
        error = float((snn(x).exp() - model(x).exp()).norm() / model(x).exp().norm())
        assert error < 0.05, error
        assert snn(torch.randn(2, 1, 300)).shape == (2, 4)  # another length
    ann2snn.save(snn, tmp_path / "audio.snn.pt")  # ONNX node names became Python identifiers
    loaded = ann2snn.load(tmp_path / "audio.snn.pt")
    with torch.no_grad():
        assert torch.allclose(loaded(x), snn(x), atol=1e-6)


def test_onnx_zoo_m5_converts():
    import ann2snn_zoo as zoo

    torch.manual_seed(0)
    model = zoo.create("m5", n_classes=10, input_shape=(1, 8000)).eval()
    x = torch.randn(4, 1, 8000)
    module = load_onnx(export(model, x))
    assert module.meta["onnx_input_shape"] == (1, 8000)
    snn = ann2snn.convert(module, T=8, learn_tau=False, calibration=[x], correction="none")
    assert len(snn.report.neurons) == 4 and not snn.report.analog
    with torch.no_grad():
        reference = model(x)
        out = analog_output(snn, x)
        if snn.output_head:
            out = snn._apply_head(out)
        assert torch.allclose(out, reference, atol=1e-4)


@pytest.mark.parametrize("opset", [17, None])  # None: the exporter's default opset, moved to 17 on import
def test_onnx_torchvision_resnet18_converts(opset):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5).eval()
    x = torch.randn(2, 3, 32, 32)
    snn = convert_onnx(export(model, x, opset=opset), T=4, learn_tau=False)
    assert len(snn.report.neurons) == 17 and not snn.report.analog
    with torch.no_grad():
        assert torch.allclose(analog_output(snn, x), model(x), atol=1e-4)


def test_unimportable_onnx_nodes_are_all_listed():
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Hardmax", ["r"], ["h"], name="hard1"),
        helper.make_node("Det", ["h"], ["y"], name="det"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ConversionError) as info:
        load_onnx(model)
    message = str(info.value)
    assert message.startswith("2 ONNX nodes cannot be imported")
    assert "`hard1` (Hardmax, opset 17)" in message and "`det` (Det, opset 17)" in message
    assert "opset_version=17" in message and "ann2snn.convert" in message


def test_bad_onnx_inputs_are_refused(tmp_path):
    with pytest.raises(ConversionError, match="no such ONNX file"):
        load_onnx(tmp_path / "missing.onnx")
    (tmp_path / "text.onnx").write_text("not a model")
    with pytest.raises(ConversionError, match="is not an ONNX model"):
        load_onnx(tmp_path / "text.onnx")
    with pytest.raises(ConversionError, match="takes a path, bytes or an onnx.ModelProto"):
        load_onnx(3)


def test_missing_onnx_packages_name_the_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_onnx2torch(name, *args, **kwargs):
        if name == "onnx2torch":
            raise ImportError("No module named 'onnx2torch'", name="onnx2torch")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx2torch)
    with pytest.raises(ConversionError, match="onnx2torch is missing.*pip install onnx onnx2torch"):
        load_onnx(b"")


def test_onnx_input_shape_reads_static_and_symbolic_sizes():
    model = onnx.load_from_string(export(AudioNet(), torch.randn(2, 1, 100), dynamic={"x": {0: "batch", 2: "time"}, "y": {0: "batch"}}))
    assert onnx_input_shape(model) == (1, None)


def test_onnx_global_max_pool_2d_is_gated():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    x = torch.randn(8, 1, 8, 8)
    data = export(model, x, dynamic={"x": {0: "batch", 2: "h", 3: "w"}, "y": {0: "batch"}})
    assert "GlobalMaxPool" in {n.op_type for n in onnx.load_from_string(data).graph.node}
    snn = convert_onnx(data, T=256, learn_tau=False, calibration=[x], percentile=100.0, correction="none")
    (pool,) = snn.report.by_action("pool")
    assert "gated max pool" in pool.after and snn.input_shape == (1, None, None)
    with torch.no_grad():
        assert torch.allclose(analog_output(snn, x), model(x), atol=1e-5)
        assert float((snn(x) - model(x)).norm() / model(x).norm()) < 0.05


def test_cli_exports_nir_of_a_free_length_onnx_net_at_the_calibration_clips_shape(tmp_path):
    """An ONNX time axis is free; --nir then takes the shape of the --calibrate clips."""
    import nir

    from ann2snn.cli import main

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 4, 5, stride=2), nn.ReLU(), nn.Conv1d(4, 4, 3), nn.ReLU(), nn.Conv1d(4, 3, 1))  # any length in
    (tmp_path / "net.onnx").write_bytes(export(model, torch.randn(2, 1, 64), dynamic={"x": {0: "batch", 2: "time"}, "y": {0: "batch"}}))
    torch.save(torch.randn(16, 1, 80), tmp_path / "calib.pt")
    code = main(["convert", str(tmp_path / "net.onnx"), "-o", str(tmp_path / "snn.pt"), "--calibrate", str(tmp_path / "calib.pt"), "--nir", str(tmp_path / "snn.nir"), "--T", "4"], plugins=[])
    assert code == 0
    graph = nir.read(tmp_path / "snn.nir")
    (given,) = [node for node in graph.nodes.values() if isinstance(node, nir.Input)]
    assert [tuple(v) for v in given.input_type.values()] == [(1, 80)]


class SigmoidSortNet(nn.Module):
    """A conv, a sigmoid (no spiking equivalent) and a sort along time (onnx2torch's TopK module)."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv1d(1, 4, 3)
        self.l = nn.Linear(4 * 14, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.sort(torch.sigmoid(self.c(x)), dim=-1).values
        return self.l(y.flatten(1))


def test_unsupported_ops_are_named_as_onnx_nodes(tmp_path):
    (tmp_path / "net.onnx").write_bytes(export(SigmoidSortNet(), torch.randn(2, 1, 16), dynamic={}))
    with pytest.raises(ConversionError) as caught:
        convert_onnx(tmp_path / "net.onnx")
    message = str(caught.value)
    assert "ONNX node `/Sigmoid` (Sigmoid)" in message and "ONNX node `/TopK` (TopK)" in message, message
    assert "<eval_with_key>" not in message and "onnx2torch" not in message, message


def test_cli_names_unsupported_onnx_nodes(tmp_path, capsys):
    from ann2snn.cli import main

    (tmp_path / "net.onnx").write_bytes(export(SigmoidSortNet(), torch.randn(2, 1, 16), dynamic={}))
    assert main(["convert", str(tmp_path / "net.onnx")], plugins=[]) == 2
    err = capsys.readouterr().err
    assert "ONNX node `/Sigmoid` (Sigmoid)" in err and "<eval_with_key>" not in err and "site-packages" not in err, err
    assert not (tmp_path / "net.snn.pt").exists()


def _with_external_weight(tmp_path, location: str):
    """An ONNX file in ``tmp_path/model`` whose first initializer is read from ``location``."""
    proto = onnx.load_from_string(export(SigmoidSortNet(), torch.randn(2, 1, 16), dynamic={}))
    tensor = proto.graph.initializer[0]
    size = len(tensor.raw_data) or 4 * len(tensor.float_data)
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(size))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    (tmp_path / "model").mkdir()
    (tmp_path / "secret.txt").write_bytes(b"S" * 4096)
    onnx.save(proto, str(tmp_path / "model" / "net.onnx"))
    return tmp_path / "model" / "net.onnx"


def test_external_data_outside_the_model_folder_is_refused_and_says_why(tmp_path):
    path = _with_external_weight(tmp_path, "../secret.txt")
    with pytest.raises(ConversionError, match=r"its external data is refused: tensor `.*` is stored in '\.\./secret\.txt', outside the model's folder"):
        load_onnx(path)


def test_external_data_through_a_symlink_is_refused_and_says_why(tmp_path):
    path = _with_external_weight(tmp_path, "link.bin")
    (path.parent / "link.bin").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(ConversionError, match="its external data is refused: .* reached through a symbolic link"):
        load_onnx(path)
