"""refit: move LLM weights from RL-trainer ranks into inference engines.

ctypes bindings over librefit's C API (refit/refit.h)::

    import refit
    with refit.Context("cluster.yaml", hf="/ckpt") as ctx:
        pub = ctx.publisher(tp_rank=0, tp_size=2)
        pub.add("decoder.layers.0.mlp.linear_fc1.weight", w)   # numpy or torch
        pub.publish(1)
        pub.wait_released(1)

See docs/python.md; engines (refit.vllm, refit.sglang): docs/engines.md.
"""

from ._lib import library_path, MEM_CUDA, MEM_HOST
from .core import LATEST, NEXT, Context, Publisher, PullStats, Receiver, StandinShard, TensorInfo, standin_step
from .dtypes import DType
from .errors import (ChecksumError, ConfigError, InvalidArgument, NotFound, NotSupported, RefitError, Timeout,
                     strerror)
from . import errors, host, safetensors

__version__ = "0.1.0"
__all__ = ["Context", "Publisher", "Receiver", "PullStats", "TensorInfo", "DType", "LATEST", "NEXT",
           "RefitError", "InvalidArgument", "NotFound", "NotSupported", "Timeout", "ConfigError",
           "ChecksumError", "standin_step", "StandinShard", "host", "library_path", "strerror", "errors",
           "safetensors", "MEM_HOST", "MEM_CUDA"]
