"""vllm/distributed/weight_transfer/base.py, in the two forms refit follows:

- API "v0.25" (base.py at 02f250b0): WeightTransferEngine(config,
  vllm_config, device, model); the engine owns start/finish;
  update_weights(dict) parses, calls receive_weights(info) and
  synchronizes; set_weight_update_target / reset_weight_update_target
  point it at the draft model and back.
- API "v0.17" (nccl_engine.py at 04b06efe): WeightTransferEngine(config,
  parallel_config); receive_weights(info, load_weights) — the worker runs
  the layerwise reload (gpu_worker.Worker.update_weights).

The form is chosen by vllm.v1.worker.gpu_worker.API, as the installed
vLLM version would choose it."""

import abc
from dataclasses import dataclass, field
from typing import Any


@dataclass
class WeightTransferInitInfo(abc.ABC):
    pass


@dataclass
class WeightTransferUpdateInfo(abc.ABC):
    pass


@dataclass
class WeightTransferInitRequest:
    init_info: dict = field(default_factory=dict)


@dataclass
class WeightTransferUpdateRequest:
    update_info: dict = field(default_factory=dict)


class WeightTransferEngine(abc.ABC):
    init_info_cls: Any = None
    update_info_cls: Any = None
    supports_draft_weight_update = True

    def __init__(self, config, *args):
        from ...v1.worker import gpu_worker
        self.config = config
        if gpu_worker.API == "v0.17":
            (self.parallel_config,) = args
        else:
            self.vllm_config, self.device, self.model = args
            self.parallel_config = self.vllm_config.parallel_config
            self.model_config = self.vllm_config.model_config
            self._default_model, self._default_model_config = self.model, self.model_config

    def set_weight_update_target(self, model, model_config):
        self.model, self.model_config = model, model_config

    def reset_weight_update_target(self):
        self.model, self.model_config = self._default_model, self._default_model_config

    def parse_init_info(self, d):
        try:
            return self.init_info_cls(**d)
        except TypeError as e:
            raise ValueError("Invalid init_info for %s: %s" % (type(self).__name__, e)) from e

    def parse_update_info(self, d):
        try:
            return self.update_info_cls(**d)
        except TypeError as e:
            raise ValueError("Invalid update_info for %s: %s" % (type(self).__name__, e)) from e

    @abc.abstractmethod
    def init_transfer_engine(self, init_info):
        raise NotImplementedError

    def start_weight_update(self):
        return None

    def finish_weight_update(self):
        return None

    def update_weights(self, update_info):
        self.receive_weights(self.parse_update_info(update_info))
        # torch.accelerator.synchronize(): nothing is asynchronous on the host.

    @abc.abstractmethod
    def receive_weights(self, update_info, *args):
        raise NotImplementedError

    @abc.abstractmethod
    def shutdown(self):
        raise NotImplementedError
