"""A vLLM engine refit by refit: now a thin user of refit.vllm.

With vLLM's weight-transfer API (vLLM >= 0.15), the ``refit`` backend:

    from vllm import LLM
    import refit.vllm
    refit.vllm.register_plugin()                 # the wheel's vllm.general_plugins entry point does this
    llm = LLM(model=ckpt, tensor_parallel_size=2,
              weight_transfer_config={"backend": "refit"})
    r = refit.vllm.Refitter(llm)
    r.init("cluster.yaml", hf=ckpt)              # per-layer plan; r.receivers for the trainer
    for step in steps:
        ...                                      # the trainer publishes `step`
        r.update(step)                           # pause, pull, reset prefix cache, resume

For any vLLM v1, the worker extension:

    llm = LLM(model=ckpt, tensor_parallel_size=2,
              worker_extension_cls="vllm_worker.RefitWorkerExtension")   # or refit.vllm.RefitWorkerExtension
    r = refit.vllm.Refitter(llm, path="extension")

Every layer whose parameters hold exactly the checkpoint's bytes after
vLLM's post-load step is written in place; every other layer (FP8 scales
transposed for CUTLASS, requantized for DeepGEMM, MoE experts reshuffled)
is pulled in checkpoint format and loaded by vLLM's own load_weights inside
its layerwise reload.  See docs/engines.md.
"""

from refit.vllm import RefitWorkerExtension  # noqa: F401  (the name vLLM's worker_extension_cls imports)

__all__ = ["RefitWorkerExtension"]
