"""SGLang python/sglang/srt/entrypoints/engine.py: the offline Engine.  Each
TP rank's ModelRunner runs under its TP position (in SGLang, a scheduler
process each).  update_weights_from_tensor(named_tensors, load_format,
flush_cache=True) reaches every rank's ModelRunner and, on success and with
flush_cache, the scheduler's flush_cache (Scheduler.update_weights_from_tensor);
pause_generation(mode) / continue_generation hold generation.  ``events``
records every call in order with whether generation was paused."""

from types import SimpleNamespace

from sglang.srt.distributed import worker_context
from sglang.srt.model_executor.model_runner import ModelRunner


class Engine:
    def __init__(self, model_path, tp_size=1, custom_weight_loader=None):
        self.server_args = SimpleNamespace(tp_size=tp_size, custom_weight_loader=list(custom_weight_loader or []))
        self.runners = [ModelRunner(model_path, r, tp_size, self.server_args) for r in range(tp_size)]
        self.paused = False
        self.events = []

    def update_weights_from_tensor(self, named_tensors, load_format=None, flush_cache=True):
        self.events.append(("update_weights_from_tensor", load_format, self.paused))
        for r in self.runners:
            with worker_context(r.tp_rank, r.tp_size):
                ok, msg = r.update_weights_from_tensor(list(named_tensors), load_format)
            if not ok:
                return False, msg
        if flush_cache:
            self.flush_cache()
        return True, "Success"

    def flush_cache(self):
        self.events.append(("flush_cache", self.paused))
        return True

    def pause_generation(self, mode="abort"):
        self.paused = True
        self.events.append(("pause_generation", mode))

    def continue_generation(self):
        self.paused = False
        self.events.append(("continue_generation",))
