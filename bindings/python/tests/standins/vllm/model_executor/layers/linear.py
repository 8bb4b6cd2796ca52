"""vllm/model_executor/layers/linear.py (v0.11): tensor-parallel linear layers.

Each layer asks its quant method for its parameters (create_weights) and
loads checkpoint tensors through ``weight_loader_v2``: Column / QKV /
Merged narrow the output dimension to this rank's shard (the QKV and
merged layers place each checkpoint part at its offset: q at 0, k after
the rank's q heads, v after its k heads; gate at 0, up after gate), Row
narrows the input dimension.  For block-FP8 scales the offsets and sizes
are in 128-row blocks (adjust_block_scale_shard).  UnquantizedLinearMethod
has no post-load step on CUDA (on CPU vLLM repacks the weight for oneDNN,
dispatch_cpu_unquantized_gemm; not modelled: refit never writes CPU
engines directly)."""

from nn import Module, empty
from refit.dtypes import DType

from ...distributed import get_tensor_model_parallel_rank, get_tensor_model_parallel_world_size
from ..parameter import BlockQuantScaleParameter, ModelWeightParameter, copy_
from .quantization.base_config import QuantizeMethodBase


def default_weight_loader(param, loaded_weight):
    if param.shape != loaded_weight.shape:
        raise ValueError("attempted to load weight %s into parameter %s" % (loaded_weight.shape, param.shape))
    copy_(param.data, loaded_weight)


def adjust_block_scale_shard(weight_block_size, shard_size, shard_offset):
    block_n = weight_block_size[0]
    return (shard_size + block_n - 1) // block_n, (shard_offset + block_n - 1) // block_n


class LinearMethodBase(QuantizeMethodBase):
    pass


class UnquantizedLinearMethod(LinearMethodBase):
    def create_weights(self, layer, input_size_per_partition, output_partition_sizes, input_size, output_size,
                       params_dtype, **extra):
        w = ModelWeightParameter(empty((sum(output_partition_sizes), input_size_per_partition), params_dtype),
                                 input_dim=1, output_dim=0, weight_loader=extra.get("weight_loader"))
        layer.register_parameter("weight", w)

    def process_weights_after_loading(self, layer):
        return


class LinearBase(Module):
    def __init__(self, input_size, output_size, quant_config=None, prefix="", params_dtype=DType.BF16,
                 disable_tp=False):
        super().__init__()
        self.input_size, self.output_size = input_size, output_size
        self.params_dtype = params_dtype
        self.tp_rank = 0 if disable_tp else get_tensor_model_parallel_rank()
        self.tp_size = 1 if disable_tp else get_tensor_model_parallel_world_size()
        self.quant_method = (quant_config.get_quant_method(self, prefix) if quant_config is not None else None) \
            or UnquantizedLinearMethod()
        self.weight_block_size = getattr(quant_config, "weight_block_size", None)

    def _create(self, in_pp, out_sizes):
        self.quant_method.create_weights(self, in_pp, out_sizes, self.input_size, self.output_size,
                                         self.params_dtype, weight_loader=self.weight_loader_v2)


class ReplicatedLinear(LinearBase):
    def __init__(self, input_size, output_size, quant_config=None, prefix="", params_dtype=DType.BF16):
        super().__init__(input_size, output_size, quant_config, prefix, params_dtype, disable_tp=True)
        self._create(input_size, [output_size])

    def weight_loader_v2(self, param, loaded_weight):
        default_weight_loader(param, loaded_weight)


class ColumnParallelLinear(LinearBase):
    def __init__(self, input_size, output_size, quant_config=None, prefix="", output_sizes=None):
        super().__init__(input_size, output_size, quant_config, prefix)
        self.output_sizes = output_sizes or [output_size]
        self.output_partition_sizes = [s // self.tp_size for s in self.output_sizes]
        self._create(input_size, self.output_partition_sizes)

    def weight_loader_v2(self, param, loaded_weight):
        param.load_column_parallel_weight(loaded_weight)


class MergedColumnParallelLinear(ColumnParallelLinear):
    def __init__(self, input_size, output_sizes, quant_config=None, prefix=""):
        super().__init__(input_size, sum(output_sizes), quant_config, prefix, output_sizes=list(output_sizes))

    def weight_loader_v2(self, param, loaded_weight, loaded_shard_id=None):
        offset = sum(self.output_sizes[:loaded_shard_id]) // self.tp_size
        size = self.output_sizes[loaded_shard_id] // self.tp_size
        if isinstance(param, BlockQuantScaleParameter):
            size, offset = adjust_block_scale_shard(self.weight_block_size, size, offset)
        param.load_merged_column_weight(loaded_weight, shard_offset=offset, shard_size=size)


class QKVParallelLinear(ColumnParallelLinear):
    def __init__(self, hidden_size, head_size, total_num_heads, total_num_kv_heads, quant_config=None, prefix=""):
        tp = get_tensor_model_parallel_world_size()
        self.head_size = head_size
        self.num_heads = total_num_heads // tp
        if tp >= total_num_kv_heads:
            self.num_kv_heads, self.num_kv_head_replicas = 1, tp // total_num_kv_heads
        else:
            self.num_kv_heads, self.num_kv_head_replicas = total_num_kv_heads // tp, 1
        sizes = [self.num_heads * head_size * tp, self.num_kv_heads * head_size * tp,
                 self.num_kv_heads * head_size * tp]
        super().__init__(hidden_size, sum(sizes), quant_config, prefix, output_sizes=sizes)

    def _offset(self, sid):
        return {"q": 0, "k": self.num_heads * self.head_size,
                "v": (self.num_heads + self.num_kv_heads) * self.head_size}[sid]

    def _size(self, sid):
        return (self.num_heads if sid == "q" else self.num_kv_heads) * self.head_size

    def weight_loader_v2(self, param, loaded_weight, loaded_shard_id=None):
        offset, size = self._offset(loaded_shard_id), self._size(loaded_shard_id)
        if isinstance(param, BlockQuantScaleParameter):
            size, offset = adjust_block_scale_shard(self.weight_block_size, size, offset)
        param.load_qkv_weight(loaded_weight, num_heads=self.num_kv_head_replicas, shard_id=loaded_shard_id,
                              shard_offset=offset, shard_size=size)


class RowParallelLinear(LinearBase):
    def __init__(self, input_size, output_size, quant_config=None, prefix=""):
        super().__init__(input_size, output_size, quant_config, prefix)
        self.input_size_per_partition = input_size // self.tp_size
        self._create(self.input_size_per_partition, [output_size])

    def weight_loader_v2(self, param, loaded_weight):
        param.load_row_parallel_weight(loaded_weight)
