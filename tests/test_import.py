"""Importing the compiler is quiet: Norse's use of the deprecated torch.jit.script is silenced narrowly."""

import subprocess
import sys


def test_import_prints_no_warning():
    result = subprocess.run([sys.executable, "-W", "default", "-c", "import ann2snn"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "jit.script" not in result.stderr and "Warning" not in result.stderr, result.stderr
