#!/usr/bin/env python
"""Convert a trained CNN into a spiking network: ``python tools/convert.py model.pt -o snn.pt``.

A thin wrapper over ``ann2snn.cli`` (the ``ann2snn convert`` console script; see ``--help``)
composed with the audio zoo's plugin (``ann2snn_zoo.cli_plugins``: zoo checkpoints, ``--model``, zoo data
sets for ``--calibrate`` / ``--evaluate``). Without the audio extra, the zoo's plugin is left out
and the command still converts ``.pt2``, ``.onnx`` and pickled models with ``.pt`` data.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ann2snn import cli  # noqa: E402


def plugins() -> list:
    try:
        from ann2snn_zoo.cli_plugins import ZooPlugin
    except ImportError as error:  # no torchaudio / soundfile: the compiler's command alone
        print(f"note: the audio zoo's models and data sets are unavailable ({error})", file=sys.stderr)
        return []
    return [ZooPlugin()]


if __name__ == "__main__":
    sys.exit(cli.main(["convert", *sys.argv[1:]], plugins=plugins()))
