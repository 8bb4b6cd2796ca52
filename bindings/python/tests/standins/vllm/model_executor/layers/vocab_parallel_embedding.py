"""vllm/model_executor/layers/vocab_parallel_embedding.py (v0.11).

The vocabulary is padded to a multiple of 64 (DEFAULT_VOCAB_PADDING_SIZE)
and split evenly over TP ranks; rank r holds padded rows [r*n, (r+1)*n) and
loads the checkpoint rows of that range that exist (org_vocab_start_index
.. org_vocab_end_index), zeroing the padding rows.  No post-load step
(UnquantizedEmbeddingMethod)."""

from nn import Module, empty
from refit.dtypes import DType

from ...distributed import get_tensor_model_parallel_rank, get_tensor_model_parallel_world_size
from ..parameter import copy_
from .quantization.base_config import QuantizeMethodBase
from nn import Parameter

PAD = 64


class UnquantizedEmbeddingMethod(QuantizeMethodBase):
    def process_weights_after_loading(self, layer):
        return


class VocabParallelEmbedding(Module):
    def __init__(self, num_embeddings, embedding_dim, params_dtype=DType.BF16, prefix=""):
        super().__init__()
        tp, rank = get_tensor_model_parallel_world_size(), get_tensor_model_parallel_rank()
        self.org_vocab_size = num_embeddings
        self.num_embeddings_padded = -(-num_embeddings // PAD) * PAD
        self.per_partition = self.num_embeddings_padded // tp
        self.org_start = min(rank * self.per_partition, num_embeddings)
        self.org_end = min(self.org_start + self.per_partition, num_embeddings)
        self.quant_method = UnquantizedEmbeddingMethod()
        w = Parameter(empty((self.per_partition, embedding_dim), params_dtype))
        w.weight_loader = self.weight_loader
        w.output_dim = 0
        self.weight = w

    def weight_loader(self, param, loaded_weight):
        n = self.org_end - self.org_start
        copy_(param.data.narrow(0, 0, n), loaded_weight.narrow(0, self.org_start, n))
        param.data.narrow(0, n, param.shape[0] - n).fill_bytes(0)


class ParallelLMHead(VocabParallelEmbedding):
    pass
