"""vllm/v1/engine/async_llm.py: AsyncLLM's generation control around a
weight update (docs/training/async_rl, api_router pause/resume).

pause_generation(mode="abort"|"wait"|"keep", clear_cache=True): abort
aborts the in-flight requests, wait lets them finish, keep freezes them
until resume_generation.  ``requests`` are the stand-in's in-flight
requests; ``events`` records every call in order, with the requests'
states at pause time.  The weight-transfer methods and collective_rpc go to
an LLM's workers (the engine core)."""

from ...entrypoints.llm import LLM


class AsyncLLM:
    def __init__(self, **kw):
        self.core = LLM(**kw)
        self.events = []
        self.paused = False
        self.requests = {"req-0": "running", "req-1": "running"}

    async def pause_generation(self, *, mode="abort", wait_for_inflight_requests=False, clear_cache=True):
        if mode not in ("abort", "wait", "keep"):
            raise ValueError("mode %r" % mode)
        new = {"abort": "aborted", "wait": "finished", "keep": "frozen"}[mode]
        self.requests = {k: (new if v == "running" else v) for k, v in self.requests.items()}
        self.paused = True
        self.events.append(("pause", mode, dict(self.requests)))

    async def resume_generation(self):
        self.requests = {k: ("running" if v == "frozen" else v) for k, v in self.requests.items()}
        self.paused = False
        self.events.append(("resume",))

    async def is_paused(self):
        return self.paused

    async def reset_prefix_cache(self, reset_running_requests=False, reset_connector=False):
        self.events.append(("reset_prefix_cache", self.paused))
        return True

    async def collective_rpc(self, method, timeout=None, args=(), kwargs=None):
        self.events.append(("collective_rpc", method if isinstance(method, str) else method.__name__, self.paused))
        return self.core.collective_rpc(method, timeout, args, kwargs)

    async def init_weight_transfer_engine(self, request):
        self.events.append(("init_weight_transfer_engine",))
        self.core.init_weight_transfer_engine(request)

    async def start_weight_update(self):
        self.events.append(("start_weight_update", self.paused))
        self.core.start_weight_update()

    async def start_draft_weight_update(self):
        self.events.append(("start_draft_weight_update", self.paused))
        self.core.start_draft_weight_update()

    async def update_weights(self, request):
        self.events.append(("update_weights", self.paused))
        self.core.update_weights(request)

    async def finish_weight_update(self):
        self.events.append(("finish_weight_update", self.paused))
        self.core.finish_weight_update()
