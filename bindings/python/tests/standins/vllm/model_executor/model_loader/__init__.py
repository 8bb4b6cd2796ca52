"""vllm/model_executor/model_loader (default_loader.py, utils.py, v0.11+):
build the model, record what its layers look like before loading
(record_metadata_for_reloading: the checkpoint-format parameters a later
layerwise reload restores), load the checkpoint's tensors in file order
through model.load_weights, then process_weights_after_loading: every
module's quant method runs its post-load step."""

import json
import os

import refit.safetensors as st

from ..layers.quantization.base_config import QuantizeMethodBase
from ..layers.quantization.fp8 import Fp8Config
from ..models.qwen3 import Qwen3ForCausalLM
from .reload import record_metadata_for_reloading


def process_weights_after_loading(model, model_config=None, target_device=None):
    for module in model.modules():
        qm = getattr(module, "quant_method", None)
        if isinstance(qm, QuantizeMethodBase):
            qm.process_weights_after_loading(module)


def read_hf_config(path):
    with open(os.path.join(path, "config.json")) as f:
        return json.load(f)


def quant_config_of(hf_config):
    q = hf_config.get("quantization_config")
    return Fp8Config.from_config(q) if q and q.get("quant_method") == "fp8" else None


def checkpoint_weights(path):
    """(name, tensor) of every *.safetensors file of a checkpoint directory, in file order."""
    for fn in sorted(os.listdir(path)):
        if fn.endswith(".safetensors"):
            yield from st.read_host(os.path.join(path, fn)).items()


def get_model(path, use_ep=False):
    hf = read_hf_config(path)
    model = Qwen3ForCausalLM(hf, quant_config_of(hf), use_ep=use_ep)
    record_metadata_for_reloading(model)
    model.load_weights(checkpoint_weights(path))
    process_weights_after_loading(model)
    return model
