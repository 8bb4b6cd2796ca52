"""vllm.distributed: the tensor-parallel position of the worker running now.

The stand-in runs every worker in one process; the LLM sets the position of
the worker it dispatches to (``worker_context``), as each real worker
process has its own."""

import contextlib

_state = {"tp_rank": 0, "tp_size": 1}


def get_tensor_model_parallel_rank():
    return _state["tp_rank"]


def get_tensor_model_parallel_world_size():
    return _state["tp_size"]


@contextlib.contextmanager
def worker_context(tp_rank, tp_size):
    old = dict(_state)
    _state.update(tp_rank=tp_rank, tp_size=tp_size)
    try:
        yield
    finally:
        _state.update(old)
