"""Packaging: the folder zoo/ is installed as ``ann2snn_zoo`` (pyproject.toml), nothing in it
imports itself as ``zoo`` (a wheel has no ``zoo``), ``import zoo`` in a checkout is the same
modules, the package list names every package, and every ``ann2snn[extra]`` a message or page
names exists."""

import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run_python(code: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=cwd, env=ENV)


def test_the_package_list_names_every_package_folder():
    setuptools = PYPROJECT["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"ann2snn_zoo": "zoo"}
    folders = {"ann2snn": ROOT / "ann2snn", "ann2snn_zoo": ROOT / "zoo"}
    found = {".".join([name, *init.parent.relative_to(folder).parts]) for name, folder in folders.items() for init in folder.rglob("__init__.py") if "__pycache__" not in init.parts}
    assert sorted(setuptools["packages"]) == sorted(found)


def test_the_zoo_never_imports_itself_by_its_folder_name():
    """An installed wheel has ann2snn_zoo and no zoo: an ``import zoo`` inside the package would fail there."""
    pattern = re.compile(r"^\s*(from\s+zoo[\s.]|import\s+zoo\b)", re.MULTILINE)
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "zoo").rglob("*.py") if pattern.search(p.read_text())]
    assert not offenders


def test_the_plugin_entry_point_names_the_installed_package():
    entry = PYPROJECT["project"]["entry-points"]["ann2snn.cli_plugins"]["zoo"]
    assert entry == "ann2snn_zoo.cli_plugins:ZooPlugin"


def test_every_extra_named_in_messages_and_pages_exists():
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    files = [*(ROOT / "ann2snn").rglob("*.py"), *(ROOT / "zoo").rglob("*.py"), *(ROOT / "tools").glob("*.py"), *(ROOT / "docs").glob("*.md"), ROOT / "README.md"]
    named = {(extra, str(path.relative_to(ROOT))) for path in files for group in re.findall(r"ann2snn\[([\w,\s-]+)\]", path.read_text()) for extra in re.split(r"[,\s]+", group) if extra}
    assert named, "no ann2snn[extra] found: the pattern is stale"
    assert not [(extra, where) for extra, where in named if extra not in extras]


def test_import_zoo_in_a_checkout_is_the_installed_package_itself():
    pytest.importorskip("ann2snn_zoo")
    code = (
        "import sys\nimport zoo\nimport zoo.harness.train\nfrom zoo.data import registry\nfrom zoo.cli_plugins import ZooPlugin\n"
        "import ann2snn_zoo, ann2snn_zoo.harness.train, ann2snn_zoo.cli_plugins\n"
        "assert zoo is ann2snn_zoo and zoo.harness.train is ann2snn_zoo.harness.train and ZooPlugin is ann2snn_zoo.cli_plugins.ZooPlugin\n"
        "aliases = [m for m in sys.modules if m.split('.')[0] == 'zoo']\n"
        "assert all(sys.modules[m] is sys.modules['ann2snn_' + m] for m in aliases), aliases\n"
        "assert ann2snn_zoo.harness.train.__spec__.name == 'ann2snn_zoo.harness.train'\n"
        "import importlib.util\nassert importlib.util.find_spec('zoo.no_such_module') is None\n"
        "from ann2snn.cli import installed_plugins\nplugins, failed = installed_plugins()\n"
        "assert not failed and [type(p) for p in plugins if p.name == 'zoo'] == [ZooPlugin], (plugins, failed)\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", ["ann2snn_zoo", "zoo"])
def test_the_zoo_without_the_audio_extra_names_it(name):
    code = f"import sys; sys.modules['soundfile'] = None\ntry:\n    import {name}\nexcept ImportError as e:\n    print(type(e).__name__, e)"
    result = run_python(code)
    assert result.stdout.startswith("ImportError "), result.stdout + result.stderr  # not ModuleNotFoundError: soundfile
    assert "pip install 'ann2snn[audio]'" in result.stdout, result.stdout + result.stderr
    assert "audio" in PYPROJECT["project"]["optional-dependencies"]


def test_the_command_without_the_audio_extra_names_it(tmp_path):
    """The console script loads the zoo's plugin from its entry point; without soundfile,
    ``ann2snn train`` says which plugin failed and which extra it needs."""
    pytest.importorskip("ann2snn_zoo")
    code = "import sys; sys.modules['soundfile'] = None\nfrom ann2snn.cli import main\nsys.exit(main(['train', '--help']))"
    result = run_python(code, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "error: no command 'train'" in result.stderr and "zoo (ImportError" in result.stderr and "pip install 'ann2snn[audio]'" in result.stderr


@pytest.mark.slow
def test_the_wheel_holds_ann2snn_and_ann2snn_zoo_and_no_zoo(tmp_path):
    """A wheel built from a copy of the sources: the two packages, the zoo's subpackages under
    ann2snn_zoo/, no top-level zoo/, and the plugin entry point."""
    setuptools = pytest.importorskip("setuptools")  # the build runs offline, with this environment's setuptools
    if tuple(int(part) for part in setuptools.__version__.split(".")[:2]) < (70, 1):
        pytest.importorskip("wheel")  # bdist_wheel came from the wheel package before setuptools 70.1
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("ann2snn", "zoo"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(tmp_path / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = (tmp_path / "dist").glob("ann2snn-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"ann2snn", "ann2snn_zoo"}, top
    for module in ("ann2snn_zoo/__init__.py", "ann2snn_zoo/cli_plugins.py", "ann2snn_zoo/data/__init__.py", "ann2snn_zoo/harness/train_cli.py",
                   "ann2snn_zoo/models/m5.py", "ann2snn/passes/__init__.py"):  # fmt: skip
        assert module in names, module
    sources = {str(p.relative_to(ROOT / "zoo")) for p in (ROOT / "zoo").rglob("*.py") if "__pycache__" not in p.parts}
    assert sources <= {n.removeprefix("ann2snn_zoo/") for n in names if n.startswith("ann2snn_zoo/")}
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "zoo = ann2snn_zoo.cli_plugins:ZooPlugin" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_python_m_zoo_module_runs_in_a_checkout():
    pytest.importorskip("ann2snn_zoo")
    result = subprocess.run([sys.executable, "-m", "zoo.speed", "--help"], capture_output=True, text=True, timeout=300, cwd=ROOT, env=ENV)
    assert result.returncode == 0 and "--repeats" in result.stdout, result.stdout + result.stderr


def test_the_experiment_command_without_matplotlib_names_the_plot_extra(tmp_path):
    """``ann2snn experiment`` writes plots: without matplotlib (the audio extra alone) it says so."""
    pytest.importorskip("ann2snn_zoo")
    code = "import sys; sys.modules['matplotlib'] = None\nfrom ann2snn.cli import main\nsys.exit(main(['experiment', '--help']))"
    result = run_python(code, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: ann2snn experiment needs matplotlib") and "pip install 'ann2snn[audio,plot]'" in result.stderr, result.stderr
