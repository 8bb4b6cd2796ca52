"""SGLang python/sglang/srt/model_executor/model_runner.py: loading the model
and update_weights_from_tensor(named_tensors, load_format):

- load_format "direct": every tensor copied into the parameter of its name;
- a load_format listed in server_args.custom_weight_loader: that function,
  imported by its dotted path (dynamic_import), called as
  ``loader(self.model, named_tensors)``;
- None: ``self.model.load_weights(named_tensors)``;
- anything else: NotImplementedError.
It returns (True, "Success")."""

from sglang.srt.distributed import worker_context
from sglang.srt.layers.quantization.fp8 import Fp8Config
from sglang.srt.utils import dynamic_import
from vllm.model_executor.model_loader import checkpoint_weights, read_hf_config
from vllm.model_executor.models.qwen3 import Qwen3ForCausalLM


def _model_load_weights_direct(model, named_tensors):
    params = dict(model.named_parameters())
    for name, t in named_tensors:
        params[name].copy_(t)


class ModelRunner:
    def __init__(self, model_path, tp_rank, tp_size, server_args):
        self.tp_rank, self.tp_size, self.server_args = tp_rank, tp_size, server_args
        hf = read_hf_config(model_path)
        q = hf.get("quantization_config")
        with worker_context(tp_rank, tp_size):
            self.model = Qwen3ForCausalLM(hf, Fp8Config.from_config(q) if q else None)
            self.model.load_weights(checkpoint_weights(model_path))
            for m in self.model.modules():
                qm = getattr(m, "quant_method", None)
                if qm is not None:
                    qm.process_weights_after_loading(m)

    def update_weights_from_tensor(self, named_tensors, load_format=None):
        if load_format == "direct":
            _model_load_weights_direct(self.model, named_tensors)
        elif load_format in self.server_args.custom_weight_loader:
            dynamic_import(load_format)(self.model, named_tensors)
        elif load_format is None:
            self.model.load_weights(named_tensors)
        else:
            raise NotImplementedError("Unknown load_format=%s" % load_format)
        return True, "Success"
