"""vllm/model_executor/models/qwen3.py, qwen2.py and qwen3_moe.py (v0.11):
Qwen3 and Qwen3-MoE as vLLM builds and loads them.

Modules: model.embed_tokens (VocabParallelEmbedding), model.layers.L
{input_layernorm, self_attn {qkv_proj, o_proj, q_norm, k_norm, attn},
post_attention_layernorm, mlp {gate_up_proj, down_proj} | mlp {gate
(ReplicatedLinear router, unquantized), experts (FusedMoE)}}, model.norm,
lm_head (absent when tied).  ``packed_modules_mapping``: qkv_proj <- q, k,
v; gate_up_proj <- gate, up.

load_weights (Qwen2Model.load_weights / Qwen3MoeModel.load_weights):
checkpoint names are matched against stacked_params_mapping (q/k/v ->
qkv_proj with shard ids "q"/"k"/"v"; gate/up -> gate_up_proj with 0/1;
expert tensors are skipped there) and, for MoE, the expert mapping, else
taken by their own name; the parameter's weight_loader does the rest.  A
name with no parameter raises KeyError, as vLLM's params_dict lookup
does.  Qwen3ForCausalLM routes ``model.*`` to the inner model and skips
``lm_head.`` when embeddings are tied (AutoWeightsLoader skip_prefixes)."""

from nn import Module, ModuleList

from ..layers.fused_moe import FusedMoE
from ..layers.layernorm import RMSNorm
from ..layers.linear import MergedColumnParallelLinear, QKVParallelLinear, ReplicatedLinear, RowParallelLinear, \
    default_weight_loader
from ..layers.vocab_parallel_embedding import ParallelLMHead, VocabParallelEmbedding

STACKED = [("qkv_proj", "q_proj", "q"), ("qkv_proj", "k_proj", "k"), ("qkv_proj", "v_proj", "v"),
           ("gate_up_proj", "gate_proj", 0), ("gate_up_proj", "up_proj", 1)]


class Attention(Module):
    """The attention op (its KV-cache scales are not modelled)."""


class Qwen3Attention(Module):
    def __init__(self, c, qc, prefix):
        super().__init__()
        d = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
        self.qkv_proj = QKVParallelLinear(c["hidden_size"], d, c["num_attention_heads"], c["num_key_value_heads"],
                                          qc, prefix + ".qkv_proj")
        self.o_proj = RowParallelLinear(c["num_attention_heads"] * d, c["hidden_size"], qc, prefix + ".o_proj")
        self.q_norm = RMSNorm(d)
        self.k_norm = RMSNorm(d)
        self.attn = Attention()


class Qwen2MLP(Module):
    def __init__(self, c, qc, prefix):
        super().__init__()
        i = c["intermediate_size"]
        self.gate_up_proj = MergedColumnParallelLinear(c["hidden_size"], [i, i], qc, prefix + ".gate_up_proj")
        self.down_proj = RowParallelLinear(i, c["hidden_size"], qc, prefix + ".down_proj")


class Qwen3MoeSparseMoeBlock(Module):
    def __init__(self, c, qc, prefix, use_ep):
        super().__init__()
        self.gate = ReplicatedLinear(c["hidden_size"], c["num_experts"], None, prefix + ".gate")
        self.experts = FusedMoE(c["num_experts"], c["hidden_size"], c["moe_intermediate_size"], qc,
                                prefix + ".experts", use_ep=use_ep)


class DecoderLayer(Module):
    def __init__(self, c, qc, prefix, moe, use_ep):
        super().__init__()
        self.input_layernorm = RMSNorm(c["hidden_size"])
        self.self_attn = Qwen3Attention(c, qc, prefix + ".self_attn")
        self.post_attention_layernorm = RMSNorm(c["hidden_size"])
        self.mlp = Qwen3MoeSparseMoeBlock(c, qc, prefix + ".mlp", use_ep) if moe else Qwen2MLP(c, qc, prefix + ".mlp")


class Qwen3Model(Module):
    def __init__(self, c, qc, moe, use_ep):
        super().__init__()
        self.config, self.quant_config, self.moe = c, qc, moe
        self.embed_tokens = VocabParallelEmbedding(c["vocab_size"], c["hidden_size"])
        self.layers = ModuleList([DecoderLayer(c, qc, "model.layers.%d" % i, moe, use_ep)
                                  for i in range(c["num_hidden_layers"])])
        self.norm = RMSNorm(c["hidden_size"])

    def load_weights(self, weights):
        params = dict(self.named_parameters())
        expert_map = FusedMoE.make_expert_params_mapping("gate_proj", "down_proj", "up_proj",
                                                         self.config.get("num_experts", 0)) if self.moe else []
        loaded = set()
        for name, w in weights:
            for pname, wname, sid in STACKED:
                if wname not in name or (self.moe and "mlp.experts" in name):
                    continue
                name = name.replace(wname, pname)
                p = params[name]
                p.weight_loader(p, w, sid)
                break
            else:
                for pname, wname, eid, sid in expert_map:
                    if wname not in name:
                        continue
                    name = name.replace(wname, pname)
                    p = params[name]
                    p.weight_loader(p, w, name, shard_id=sid, expert_id=eid)
                    break
                else:
                    p = params[name]
                    (getattr(p, "weight_loader", None) or default_weight_loader)(p, w)
            loaded.add(name)
        return loaded


class Qwen3ForCausalLM(Module):
    packed_modules_mapping = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}

    def __init__(self, hf_config, quant_config=None, use_ep=False):
        super().__init__()
        self.config = hf_config
        self.quant_config = quant_config
        moe = hf_config.get("model_type") == "qwen3_moe"
        self.model = Qwen3Model(hf_config, quant_config, moe, use_ep)
        self.tied = bool(hf_config.get("tie_word_embeddings"))
        if not self.tied:
            self.lm_head = ParallelLMHead(hf_config["vocab_size"], hf_config["hidden_size"])

    def load_weights(self, weights):
        inner, loaded = [], set()
        for name, w in weights:
            if name.startswith("lm_head."):
                if self.tied:
                    continue
                self.lm_head.weight.weight_loader(self.lm_head.weight, w)
                loaded.add(name)
            elif name.startswith("model."):
                inner.append((name[len("model."):], w))
            else:
                raise KeyError(name)
        loaded |= {"model." + n for n in self.model.load_weights(inner)}
        return loaded


Qwen3MoeForCausalLM = Qwen3ForCausalLM
