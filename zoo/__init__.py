"""Audio model zoo: CNNs for keyword spotting (`create`), front ends, and data sets (`ann2snn_zoo.data`).

The folder ``zoo/`` is installed as the package ``ann2snn_zoo`` (pyproject.toml maps the name to
the folder; a top-level ``zoo`` would clash with other distributions' packages of that name), so
``import ann2snn_zoo`` is how code imports it, installed or editable. In a checkout, ``import zoo``
(from the repository root, where the folder is on ``sys.path``) still works: below, it makes
``zoo`` and every ``zoo.X`` the same module objects as ``ann2snn_zoo`` and ``ann2snn_zoo.X``,
never a second copy of the zoo's classes and registries.
"""

import sys

try:
    import soundfile  # noqa: F401
    import torchaudio  # noqa: F401
except (ImportError, OSError) as error:  # pragma: no cover - depends on the installed extras; OSError: a torchaudio built for another torch
    raise ImportError(f"the audio model zoo needs torchaudio and soundfile ({error}); install them with pip install 'ann2snn[audio]' (torchaudio must match your torch release exactly)") from error

if __name__ != "ann2snn_zoo":  # this folder imported by its own name (import zoo, in a checkout)
    import importlib.util
    from importlib import import_module

    try:
        _installed = import_module("ann2snn_zoo")
    except ModuleNotFoundError as error:
        if error.name != "ann2snn_zoo":
            raise
        raise ImportError(
            f"{__name__}/ is the source folder of the package ann2snn_zoo, which is not installed: pip install -e '.[audio]' in the repository (scripts/env.sh does), then import ann2snn_zoo"
        ) from None

    class _Alias:
        """Meta-path finder and loader: ``<alias>.X`` is the module ``ann2snn_zoo.X`` itself."""

        def __init__(self, alias: str) -> None:
            self.alias, self.specs = alias, {}

        def find_spec(self, fullname, path=None, target=None):
            real = importlib.util.find_spec(self._real(fullname)) if fullname.startswith(self.alias + ".") else None
            return None if real is None else importlib.util.spec_from_loader(fullname, self, origin=real.origin)

        def _real(self, fullname: str) -> str:
            return "ann2snn_zoo" + fullname[len(self.alias) :]

        def create_module(self, spec):
            module = import_module(self._real(spec.name))
            self.specs[spec.name] = module.__spec__
            return module

        def exec_module(self, module) -> None:
            module.__spec__ = self.specs.pop(module.__spec__.name)  # the import system set the alias's

        def get_code(self, fullname):  # python -m zoo.X runs ann2snn_zoo.X's code
            return importlib.util.find_spec(self._real(fullname)).loader.get_code(self._real(fullname))

    if not any(type(finder).__name__ == "_Alias" and getattr(finder, "alias", None) == __name__ for finder in sys.meta_path):  # once
        sys.meta_path.insert(0, _Alias(__name__))
    sys.modules[__name__] = _installed  # what `import zoo` returns: the import system reads it back
else:
    from ann2snn_zoo import data
    from ann2snn_zoo.augment import Augment
    from ann2snn_zoo.errors import DataError
    from ann2snn_zoo.frontend import FrontEnd
    from ann2snn_zoo.registry import InputSpec, create, input_spec, names

__all__ = ["Augment", "DataError", "FrontEnd", "InputSpec", "create", "data", "input_spec", "names"]
