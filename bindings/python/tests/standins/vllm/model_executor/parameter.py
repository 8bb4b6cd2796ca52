"""vllm/model_executor/parameter.py (v0.11): parameters that load themselves.

BasevLLMParameter keeps its weight_loader and the TP rank it was built on;
_ColumnvLLMParameter narrows the loaded tensor along ``output_dim`` to
this rank's shard (load_column_parallel_weight / load_merged_column_weight
/ load_qkv_weight: a KV head replicated over tp // num_kv_heads ranks is
read at shard rank tp_rank // num_kv_head_replicas), RowvLLMParameter
along ``input_dim`` (load_row_parallel_weight).  ModelWeightParameter and
BlockQuantScaleParameter are both; the latter's shard offsets are in
blocks (the linear layers divide them).

``COPIED`` counts the elements every loader copies into parameters: the
stand-in's CopyCounter (vLLM's reload counts loaded elements with a
TorchDispatchMode to know when a layer is complete)."""

from ..distributed import get_tensor_model_parallel_rank, get_tensor_model_parallel_world_size
from nn import Parameter

COPIED = [0]


def copy_(dst, src):
    dst.copy_(src)
    COPIED[0] += dst.numel


class BasevLLMParameter(Parameter):
    def __init__(self, data, weight_loader=None, **kw):
        super().__init__(data)
        self.weight_loader = weight_loader
        self.tp_rank = get_tensor_model_parallel_rank()
        self.tp_size = get_tensor_model_parallel_world_size()

    def load_weight(self, loaded_weight):
        copy_(self.data, loaded_weight)


class _ColumnvLLMParameter(BasevLLMParameter):
    def __init__(self, data, output_dim, **kw):
        self.output_dim = output_dim
        super().__init__(data, **kw)

    def load_column_parallel_weight(self, loaded_weight):
        n = self.data.shape[self.output_dim]
        copy_(self.data, loaded_weight.narrow(self.output_dim, self.tp_rank * n, n))

    def load_merged_column_weight(self, loaded_weight, shard_offset, shard_size):
        dst = self.data.narrow(self.output_dim, shard_offset, shard_size)
        copy_(dst, loaded_weight.narrow(self.output_dim, self.tp_rank * shard_size, shard_size))

    def load_qkv_weight(self, loaded_weight, num_heads, shard_id, shard_offset, shard_size):
        shard_rank = self.tp_rank if shard_id == "q" else self.tp_rank // num_heads
        dst = self.data.narrow(self.output_dim, shard_offset, shard_size)
        copy_(dst, loaded_weight.narrow(self.output_dim, shard_rank * shard_size, shard_size))


class RowvLLMParameter(BasevLLMParameter):
    def __init__(self, data, input_dim=None, **kw):
        if input_dim is not None:
            self.input_dim = input_dim
        super().__init__(data, **kw)

    def load_row_parallel_weight(self, loaded_weight):
        n = self.data.shape[self.input_dim]
        copy_(self.data, loaded_weight.narrow(self.input_dim, self.tp_rank * n, n))


class ModelWeightParameter(_ColumnvLLMParameter, RowvLLMParameter):
    def __init__(self, data, input_dim, output_dim, weight_loader=None):
        self.input_dim = input_dim
        super().__init__(data, output_dim=output_dim, weight_loader=weight_loader)


class BlockQuantScaleParameter(ModelWeightParameter):
    pass
