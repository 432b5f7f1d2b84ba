"""Graph rewrites, one per module. Each takes a GraphModule (and the conversion report it writes
to) and returns the rewritten GraphModule; they run in the order of ``convert.PIPELINE``."""

from .batch_size import batch_size_from_reshaped
from .cleanup import remove_dropout_and_identity
from .fold_bn import fold_batchnorm
from .fuse_pool import fuse_neuron_pools
from .lower_pools import lower_tiled_avg_pools
from .pooling import rewrite_max_pooling
from .readout import mark_readout
from .relu import relu_to_neurons
from .supported import check_supported
from .time_broadcast import insert_time_broadcasts

__all__ = [
    "batch_size_from_reshaped",
    "check_supported",
    "fold_batchnorm",
    "fuse_neuron_pools",
    "insert_time_broadcasts",
    "lower_tiled_avg_pools",
    "mark_readout",
    "relu_to_neurons",
    "remove_dropout_and_identity",
    "rewrite_max_pooling",
]
