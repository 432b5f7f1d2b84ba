"""Audio model zoo: CNNs for keyword spotting (`create`), front ends, and data sets (`zoo.data`)."""

from zoo import data
from zoo.augment import Augment
from zoo.errors import DataError
from zoo.frontend import FrontEnd
from zoo.registry import InputSpec, create, input_spec, names

__all__ = ["Augment", "DataError", "FrontEnd", "InputSpec", "create", "data", "input_spec", "names"]
