"""Audio model zoo: CNNs for keyword spotting (`create`), front ends, and data sets (`zoo.data`)."""

try:
    import soundfile  # noqa: F401
    import torchaudio  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"the audio model zoo needs torchaudio and soundfile ({error}); install them with "
        "pip install 'ann2snn[audio]' (torchaudio must match your torch release exactly)"
    ) from error

from zoo import data  # noqa: E402
from zoo.augment import Augment  # noqa: E402
from zoo.errors import DataError  # noqa: E402
from zoo.frontend import FrontEnd  # noqa: E402
from zoo.registry import InputSpec, create, input_spec, names  # noqa: E402

__all__ = ["Augment", "DataError", "FrontEnd", "InputSpec", "create", "data", "input_spec", "names"]
