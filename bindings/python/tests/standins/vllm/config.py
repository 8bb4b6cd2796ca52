"""vllm/config: the parts of VllmConfig the loaders and weight transfer read."""

import contextlib


class ParallelConfig:
    def __init__(self, tensor_parallel_size=1, data_parallel_size=1, data_parallel_rank=0, rank=0,
                 enable_expert_parallel=False):
        self.tensor_parallel_size = tensor_parallel_size
        self.pipeline_parallel_size = 1
        self.data_parallel_size = data_parallel_size
        self.data_parallel_rank = data_parallel_rank
        self.data_parallel_index = data_parallel_rank
        self.rank = rank
        self.world_size = tensor_parallel_size
        self.world_size_across_dp = tensor_parallel_size * data_parallel_size
        self.enable_expert_parallel = enable_expert_parallel


class ModelConfig:
    def __init__(self, model, hf_config, dtype="bfloat16"):
        self.model, self.hf_config, self.dtype = model, hf_config, dtype


class WeightTransferConfig:
    def __init__(self, backend="nccl"):
        self.backend = backend


class VllmConfig:
    def __init__(self, model_config, parallel_config, quant_config=None, weight_transfer_config=None):
        self.model_config = model_config
        self.parallel_config = parallel_config
        self.quant_config = quant_config
        self.weight_transfer_config = weight_transfer_config


_current = []


@contextlib.contextmanager
def set_current_vllm_config(cfg):
    _current.append(cfg)
    try:
        yield
    finally:
        _current.pop()


def get_current_vllm_config():
    return _current[-1] if _current else None
