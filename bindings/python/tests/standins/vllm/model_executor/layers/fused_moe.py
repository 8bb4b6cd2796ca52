"""vllm/model_executor/layers/fused_moe/layer.py (v0.11): FusedMoE's expert
stacks and their weight_loader.

w13_weight [E_local, 2*I_tp, H] holds each expert's gate (w1) rows then its
up (w3) rows, w2_weight [E_local, H, I_tp] its down projection; block-FP8
scales follow the same layout in 128-blocks.  weight_loader(param,
loaded_weight, weight_name, shard_id, expert_id): the global expert is
mapped to its local slot (expert parallelism: whole experts per rank,
expert_map), then _load_w13 narrows the checkpoint tensor's rows to this
TP rank's half-shard and writes gate at 0, up after it; _load_w2 narrows
the columns.  make_expert_params_mapping pairs checkpoint names
``experts.{e}.gate_proj.`` / ``up_proj.`` / ``down_proj.`` with
``experts.w13_`` (w1, w3) and ``experts.w2_``.
UnquantizedFusedMoEMethod: bf16 stacks, no post-load step on CUDA."""

from nn import Module, Parameter, full
from refit.dtypes import DType

from ...distributed import get_tensor_model_parallel_rank, get_tensor_model_parallel_world_size
from ..parameter import copy_
from .quantization.base_config import QuantizeMethodBase


class UnquantizedFusedMoEMethod(QuantizeMethodBase):
    def __init__(self):
        self.rocm_aiter_moe_enabled = False
        self.flashinfer_cutlass_moe_enabled = False

    def create_weights(self, layer, num_experts, hidden_size, intermediate_size_per_partition, params_dtype, **extra):
        i, h = intermediate_size_per_partition, hidden_size
        for name, shape in (("w13_weight", (num_experts, 2 * i, h)), ("w2_weight", (num_experts, h, i))):
            p = Parameter(full(shape, params_dtype, 0.0))
            p.__dict__.update(extra)
            layer.register_parameter(name, p)

    def process_weights_after_loading(self, layer):
        return


class FusedMoE(Module):
    def __init__(self, num_experts, hidden_size, intermediate_size, quant_config=None, prefix="",
                 use_ep=False, params_dtype=DType.BF16):
        super().__init__()
        tp, rank = get_tensor_model_parallel_world_size(), get_tensor_model_parallel_rank()
        self.use_ep = use_ep and tp > 1
        self.ep_size, self.ep_rank = (tp, rank) if self.use_ep else (1, 0)
        self.tp_size, self.tp_rank = (1, 0) if self.use_ep else (tp, rank)
        self.global_num_experts = num_experts
        self.local_num_experts = num_experts // self.ep_size
        self.intermediate_size_per_partition = intermediate_size // self.tp_size
        qm = quant_config.get_quant_method(self, prefix) if quant_config is not None else None
        self.quant_method = qm or UnquantizedFusedMoEMethod()
        self.quant_method.create_weights(self, self.local_num_experts, hidden_size,
                                         self.intermediate_size_per_partition, params_dtype,
                                         weight_loader=self.weight_loader)

    def _local(self, expert_id):
        lo = self.ep_rank * self.local_num_experts
        return expert_id - lo if lo <= expert_id < lo + self.local_num_experts else None

    def weight_loader(self, param, loaded_weight, weight_name, shard_id, expert_id):
        e = self._local(expert_id)
        if e is None:
            return False
        expert = param.data.select(0, e)
        if shard_id in ("w1", "w3"):
            n = expert.shape[0] // 2
            src = loaded_weight.narrow(0, n * self.tp_rank, n)
            copy_(expert.narrow(0, 0 if shard_id == "w1" else n, n), src)
        else:
            n = expert.shape[1]
            copy_(expert, loaded_weight.narrow(1, n * self.tp_rank, n))
        return True

    @staticmethod
    def make_expert_params_mapping(ckpt_gate_proj_name, ckpt_down_proj_name, ckpt_up_proj_name, num_experts):
        out = []
        for e in range(num_experts):
            for shard_id, wname in (("w1", ckpt_gate_proj_name), ("w2", ckpt_down_proj_name),
                                    ("w3", ckpt_up_proj_name)):
                pname = "experts.w13_" if shard_id in ("w1", "w3") else "experts.w2_"
                out.append((pname, "experts.%d.%s." % (e, wname), e, shard_id))
        return out
