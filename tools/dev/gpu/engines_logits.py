#!/usr/bin/env python3
"""On a GPU machine: logits of a transformers Qwen3 refit through refit.vllm's
checkpoint path equal the reference, bit for bit.

1. A small Qwen3ForCausalLM is built from a config (random init, seed 0),
   in bf16 on the GPU, and saved as an HF checkpoint; its logits on fixed
   input ids are the reference of version 1.
2. A trainer process publishes version 1 (refit's stand-in shard of that
   checkpoint: Megatron names and layouts, copied to the GPU on a side
   stream and published with refit.trainer.publish, which orders refit's
   copies after that stream with an event), then version 2 (refit's
   stand-in weight change, refit.standin_step, applied to every weight).
3. Here, the "engine": another Qwen3ForCausalLM with different random
   weights (seed 1), given a ``load_weights`` shim over transformers' own
   ``load_state_dict(strict=True)``, refit by refit.vllm.WorkerRefit in
   mode 'checkpoint' — refit-owned device buffers in checkpoint format
   (librefit with CUDA; pinned host buffers otherwise), handed to
   load_weights, the buffer reads fenced by an event before the next pull.
   Its logits after each pull must equal the reference model's with the
   same version's weights (version 2: standin_step applied to the reference
   state dict), with torch.equal.

    tools/dev/gpu/engines_logits.sh          (sets REFIT_LIBRARY, PYTHONPATH)
"""

import argparse
import os
import subprocess
import sys
import tempfile

CONFIG = dict(vocab_size=1024, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, head_dim=64, max_position_embeddings=512,
              tie_word_embeddings=False, attention_bias=False, rms_norm_eps=1e-6)


def overrides(store):
    return {"store.plugin": "file", "store.file.path": store, "store.namespace": "engines-logits",
            "transport.plugin": "tcp", "transport.tcp.bind": "127.0.0.1", "refit.receivers": 1,
            "refit.timeout": "120s", "refit.release_timeout": "120s", "model.fp8.enabled": False}


def trainer(ckpt, store):
    """Publish versions 1 and 2 from GPU tensors written on a side stream."""
    import torch
    import refit
    import refit.trainer
    with refit.Context(None, overrides=overrides(store), hf=ckpt) as ctx, \
            refit.StandinShard(ctx, ckpt) as shard:
        side = torch.cuda.Stream()
        dev = {}
        with torch.cuda.stream(side):
            for n, t in shard.tensors.items():
                dev[n] = torch.frombuffer(bytearray(t.tobytes()), dtype=torch.bfloat16).view(t.shape).to(
                    "cuda", non_blocking=False)
        pub = ctx.publisher(source_id="gpu-trainer")
        try:
            pub.add_all(dev)
            where = "device"
        except refit.NotSupported:  # librefit without CUDA: publish host copies
            torch.cuda.synchronize()
            dev = {n: v.cpu() for n, v in dev.items()}
            pub.add_all(dev)
            where = "host"
        with torch.cuda.stream(side):
            refit.trainer.publish(pub, 1)
        pub.wait_released(1)
        for n, t in shard.tensors.items():  # the "optimizer step", on the side stream
            refit.standin_step(t, 1, 2)
            with torch.cuda.stream(side):
                src = torch.frombuffer(bytearray(t.tobytes()), dtype=torch.bfloat16).view(t.shape)
                dev[n].copy_(src.to(dev[n].device, non_blocking=False))
        with torch.cuda.stream(side):
            refit.trainer.publish(pub, 2)
        pub.wait_released(2)
        pub.close()
    print("trainer: published v1, v2 from %s tensors" % where, flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trainer", nargs=2, metavar=("CKPT", "STORE"), help=argparse.SUPPRESS)
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    a = p.parse_args()
    if a.trainer:
        return trainer(*a.trainer)

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM
    import refit
    from refit.engines import Source
    from refit.vllm import WorkerRefit

    torch.use_deterministic_algorithms(True)
    work = tempfile.mkdtemp(prefix="refit-engines-logits-")
    ckpt, store = os.path.join(work, "ckpt"), os.path.join(work, "store")
    cfg = Qwen3Config(**CONFIG)
    torch.manual_seed(0)
    ref = Qwen3ForCausalLM(cfg).to(torch.bfloat16).cuda().eval()
    ref.save_pretrained(ckpt, safe_serialization=True)
    ids = torch.randint(0, cfg.vocab_size, (2, 48), generator=torch.Generator().manual_seed(5)).cuda()

    torch.manual_seed(1)
    eng = Qwen3ForCausalLM(cfg).to(torch.bfloat16).cuda().eval()
    eng.load_weights = lambda weights: eng.load_state_dict(dict(weights), strict=True)  # the engine's loader

    refits = WorkerRefit(eng, Source(None, overrides(store), ckpt), "gpu-engine", mode="checkpoint")
    buf_dev = {str(b.device) for b in refits.ckpt.buffers.values()}
    print("engine: checkpoint-path buffers on %s, %.1f MB" % (", ".join(sorted(buf_dev)), refits.ckpt.nbytes / 1e6))
    env = dict(os.environ)
    tr = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--trainer", ckpt, store], env=env)
    ok = True
    try:
        with torch.no_grad():
            want = {1: ref(ids).logits}
            sd = {k: v.detach().cpu().clone() for k, v in ref.state_dict().items()}
            for v in sd.values():
                refit.standin_step(v, 1, 2)
            ref.load_state_dict(sd, strict=True)
            want[2] = ref(ids).logits
            for v in (1, 2):
                s = refits.update(v)["checkpoint"]
                got = eng(ids).logits
                same = torch.equal(got, want[v])
                diff = (got.float() - want[v].float()).abs().max().item()
                print("v%d: pulled %.1f MB in %.3f s; logits %s the reference (max |diff| %g)"
                      % (v, s["bytes_out"] / 1e6, s["total_s"], "EQUAL to" if same else "DIFFER from", diff))
                ok &= same
    finally:
        refits.close()
        rc = tr.wait(timeout=300)
        ok &= rc == 0
    print("engines_logits: %s" % ("PASS" if ok else "FAIL"))
    if not a.keep:
        import shutil
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
