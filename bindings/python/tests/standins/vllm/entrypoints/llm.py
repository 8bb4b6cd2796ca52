"""vllm/entrypoints/llm.py: LLM, offline.  Workers run in this process, one
per TP rank (each under its own TP position); collective_rpc calls a
method (a name, or a function called with the worker first, as vLLM's
run_method does) on every worker and returns their results in rank order.
A worker_extension_cls is mixed into the worker class, as
WorkerWrapperBase does.  ``calls`` records the engine-level calls."""

import importlib

from ..config import ModelConfig, ParallelConfig, VllmConfig, WeightTransferConfig
from ..distributed import worker_context
from ..model_executor.model_loader import quant_config_of, read_hf_config
from ..v1.worker import gpu_worker


def _resolve(qualname):
    mod, _, name = qualname.rpartition(".")
    return getattr(importlib.import_module(mod), name)


class LLM:
    def __init__(self, model, tensor_parallel_size=1, data_parallel_size=1, data_parallel_rank=0,
                 enable_expert_parallel=False, weight_transfer_config=None, worker_extension_cls=None,
                 speculative_config=None):
        self.calls = []
        hf = read_hf_config(model)
        cls = gpu_worker.Worker
        if worker_extension_cls:
            ext = _resolve(worker_extension_cls) if isinstance(worker_extension_cls, str) else worker_extension_cls
            cls = type("Worker", (gpu_worker.Worker, ext), {})
        if isinstance(weight_transfer_config, dict):
            weight_transfer_config = WeightTransferConfig(**weight_transfer_config)
        draft = (speculative_config or {}).get("model")
        self.tp = tensor_parallel_size
        self.workers = []
        for r in range(tensor_parallel_size):
            pc = ParallelConfig(tensor_parallel_size, data_parallel_size, data_parallel_rank, r,
                                enable_expert_parallel)
            vc = VllmConfig(ModelConfig(model, hf), pc, quant_config_of(hf), weight_transfer_config)
            with worker_context(r, tensor_parallel_size):
                self.workers.append(cls(vc, r, draft))

    def collective_rpc(self, method, timeout=None, args=(), kwargs=None):
        self.calls.append(("collective_rpc", method if isinstance(method, str) else method.__name__))
        out = []
        for w in self.workers:
            with worker_context(w.rank, self.tp):
                f = getattr(w, method) if isinstance(method, str) else (lambda *a, **k: method(w, *a, **k))
                out.append(f(*args, **(kwargs or {})))
        return out

    def _rpc(self, name, *args):
        self.calls.append((name,))
        out = []
        for w in self.workers:
            with worker_context(w.rank, self.tp):
                out.append(getattr(w, name)(*args))
        return out

    def init_weight_transfer_engine(self, request):
        self._rpc("init_weight_transfer_engine", request.init_info)

    def start_weight_update(self, is_checkpoint_format=True):
        if gpu_worker.API == "v0.17":
            self._rpc("start_weight_update", is_checkpoint_format)
        else:
            self._rpc("start_weight_update")

    def start_draft_weight_update(self):
        self._rpc("start_draft_weight_update")

    def update_weights(self, request):
        self._rpc("update_weights", request.update_info)

    def finish_weight_update(self):
        self._rpc("finish_weight_update")

    def reset_prefix_cache(self, reset_running_requests=False, reset_connector=False):
        self.calls.append(("reset_prefix_cache",))
        return True
