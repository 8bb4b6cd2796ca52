"""sglang.srt.distributed (a port of vLLM's parallel_state): the worker's TP position."""

from vllm.distributed import (get_tensor_model_parallel_rank, get_tensor_model_parallel_world_size,  # noqa: F401
                              worker_context)

__all__ = ["get_tensor_model_parallel_rank", "get_tensor_model_parallel_world_size", "worker_context"]
