"""vllm/v1/worker/gpu_worker.py: the worker's model runner and its
weight-transfer entry points.

API "v0.25" (base.py at 02f250b0): init_weight_transfer_engine(dict),
start_weight_update(), start_draft_weight_update() (target: the drafter's
model), update_weights(dict), finish_weight_update() (and back to the main
model).  API "v0.17" (the worker before v0.25, gpu_worker.update_weights
as read): start_weight_update(is_checkpoint_format) runs
initialize_layerwise_reload on the model for checkpoint-format updates,
update_weights hands model.load_weights (or a direct param.copy_ by name for
kernel format) to receive_weights, finish_weight_update finalizes.

The model runner holds the model and, with speculative decoding, a drafter
whose ``model`` is the draft model (EAGLE / MTP / draft-model proposers)."""

from ...config import ModelConfig
from ...distributed.weight_transfer.factory import WeightTransferEngineFactory
from ...model_executor.model_loader import get_model, read_hf_config
from ...model_executor.model_loader.reload import finalize_layerwise_reload, initialize_layerwise_reload

API = "v0.25"


class Drafter:
    def __init__(self, model, model_config):
        self.model, self.model_config = model, model_config


class GPUModelRunner:
    def __init__(self, model, drafter=None):
        self.model, self.drafter = model, drafter

    def get_model(self):
        return self.model


class Worker:
    def __init__(self, vllm_config, rank, draft_path=None):
        self.vllm_config = vllm_config
        self.rank = self.local_rank = rank
        self.device = "cpu"
        pc = vllm_config.parallel_config
        mc = vllm_config.model_config
        model = get_model(mc.model, pc.enable_expert_parallel)
        drafter = None
        if draft_path:
            drafter = Drafter(get_model(draft_path), ModelConfig(draft_path, read_hf_config(draft_path)))
        self.model_runner = GPUModelRunner(model, drafter)
        self.weight_transfer_engine = None
        wtc = vllm_config.weight_transfer_config
        if wtc is not None:
            args = (pc,) if API == "v0.17" else (vllm_config, self.device, model)
            self.weight_transfer_engine = WeightTransferEngineFactory.create_engine(wtc, *args)

    def _engine(self):
        if self.weight_transfer_engine is None:
            raise RuntimeError("Weight transfer not configured. Please set weight_transfer_config to enable "
                               "weight transfer.")
        return self.weight_transfer_engine

    def init_weight_transfer_engine(self, init_info):
        e = self._engine()
        e.init_transfer_engine(e.parse_init_info(init_info))

    def start_weight_update(self, is_checkpoint_format=True):
        e = self._engine()
        if API == "v0.17":
            if is_checkpoint_format:
                initialize_layerwise_reload(self.model_runner.model)
            self._is_checkpoint_format = is_checkpoint_format
            return
        e.start_weight_update()

    def start_draft_weight_update(self):
        e = self._engine()
        d = self.model_runner.drafter
        e.set_weight_update_target(d.model, d.model_config)
        e.start_weight_update()

    def update_weights(self, update_info):
        e = self._engine()
        if API != "v0.17":
            e.update_weights(update_info)
            return
        typed = e.parse_update_info(update_info)
        model = self.model_runner.model
        if self._is_checkpoint_format:
            e.receive_weights(typed, load_weights=model.load_weights)
        else:
            params = dict(model.named_parameters())

            def load_weights_direct(weights):
                for name, w in weights:
                    params[name].copy_(w)
            e.receive_weights(typed, load_weights=load_weights_direct)

    def finish_weight_update(self):
        e = self._engine()
        if API == "v0.17":
            if self._is_checkpoint_format:
                finalize_layerwise_reload(self.model_runner.model, self.vllm_config.model_config)
            return
        e.finish_weight_update()
        e.reset_weight_update_target()
