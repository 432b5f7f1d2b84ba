"""Importing the compiler is quiet: Norse's use of the deprecated torch.jit.script is silenced narrowly."""

import subprocess
import sys


def test_import_prints_no_warning():
    result = subprocess.run([sys.executable, "-W", "default", "-c", "import ann2snn"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "jit.script" not in result.stderr and "Warning" not in result.stderr, result.stderr


def test_zoo_without_the_audio_extra_names_it():
    code = "import sys; sys.modules['soundfile'] = None\ntry:\n    import zoo\nexcept ImportError as e:\n    print(e)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "pip install 'ann2snn[audio]'" in result.stdout, result.stdout + result.stderr
