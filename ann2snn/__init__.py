"""ann2snn: convert trained CNNs into spiking neural networks (Norse neuron dynamics) with torch.fx.

snn = ann2snn.convert(model, T=25, calibration=batches)  # zero-shot: IF neurons, calibrated thresholds
snn = ann2snn.convert(model, config=ann2snn.ConversionConfig(T=16), calibration=batches)
y = snn(x)            # same input and output shapes as model(x)
print(snn.report)

For fine-tuning after conversion, ``learn_tau=True`` makes the membrane time constants trainable.
"""

from .config import DEFAULT_LEARNABLE_TAU, ConversionConfig
from .convert import convert, recalibrate
from .encoders import Encoder
from .errors import ConversionError, ConversionWarning, InputShapeError, NeuronCompileError, StaleCalibrationWarning
from .graph import to_networkx
from .io import load, save
from .neurons import NEURON_MODELS, NorseLIFNeuron, ResetToZeroNeuron, SpikingNeuron
from .nir_export import export_nir
from .profile import Profile, profile
from .qcfs import QCFS
from .report import ConversionReport
from .temporal import GatedMaxPool
from .timeloop import SpikingNetwork
from .recording import SpikeRecord, plot_raster, record, run_sequence
from .trace import trace

__all__ = [
    "DEFAULT_LEARNABLE_TAU",
    "ConversionConfig",
    "ConversionError",
    "ConversionReport",
    "ConversionWarning",
    "Encoder",
    "GatedMaxPool",
    "InputShapeError",
    "NeuronCompileError",
    "NEURON_MODELS",
    "NorseLIFNeuron",
    "Profile",
    "QCFS",
    "ResetToZeroNeuron",
    "SpikingNetwork",
    "SpikingNeuron",
    "SpikeRecord",
    "StaleCalibrationWarning",
    "convert",
    "export_nir",
    "load",
    "plot_raster",
    "profile",
    "recalibrate",
    "record",
    "run_sequence",
    "save",
    "to_networkx",
    "trace",
]
