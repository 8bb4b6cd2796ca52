"""vllm/model_executor/layers/layernorm.py: RMSNorm's weight, loaded whole."""

from nn import Module, Parameter, empty
from refit.dtypes import DType


class RMSNorm(Module):
    def __init__(self, hidden_size, eps=1e-6, params_dtype=DType.BF16):
        super().__init__()
        self.weight = Parameter(empty((hidden_size,), params_dtype))
