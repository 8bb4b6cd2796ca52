#!/usr/bin/env python3
"""A trainer rank's loop publishing its Megatron-named parameters every step.

The rank's tensors come from a trainer shard file written by `refit shard`
(rank<r>.safetensors, Megatron names and this rank's TP/EP slices), read
with refit.safetensors into HostTensors (no numpy needed).  A real trainer adds its own
parameters instead (``pub.add(name, param.data)`` for PyTorch, by the name
Megatron gives them); everything else is the same.

Each step "trains" (here: the stand-in's deterministic change of every
weight, so that receivers can be checked against `refit convert`), then
publishes the step as a version and waits until every receiver has it,
which is the zero-copy contract: the tensors must not change between
publish(V) and the return of wait_released(V).

    refit shard --hf CKPT --tp 2 --out SHARDS
    python3 trainer_loop.py --config cluster.yaml --hf CKPT \\
        --shard SHARDS/rank0.safetensors --tp 2 --rank 0 --steps 3
"""

import argparse
import sys
import time

import refit
import refit.safetensors as st


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="cluster file (default: defaults and REFIT_* environment)")
    p.add_argument("--hf", required=True, help="HF checkpoint directory (its config.json describes the model)")
    p.add_argument("--shard", required=True, help="this rank's file from `refit shard`")
    p.add_argument("--tp", type=int, default=1)
    p.add_argument("--ep", type=int, default=1)
    p.add_argument("--rank", type=int, default=0)
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--id", help="source id (default tp<r>-pp0-ep<r>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="configuration override")
    a = p.parse_args(argv)

    # Megatron parameters of this rank, each knowing its refit dtype.
    params = st.read_host(a.shard)
    who = a.id or "trainer-%d" % a.rank

    with refit.Context(a.config, overrides=a.set, hf=a.hf) as ctx:
        pub = ctx.publisher(tp_rank=a.rank % a.tp, tp_size=a.tp, ep_rank=a.rank % a.ep, ep_size=a.ep,
                            source_id=a.id)
        for name, w in params.items():
            pub.add(name, w)
        print("[%s] %d tensors, %.3f GB" % (who, len(params), sum(w.nbytes for w in params.values()) / 1e9),
              flush=True)
        for step in range(1, a.steps + 1):
            if step > 1:
                for name, w in params.items():  # the "optimizer step"
                    refit.standin_step(w, step - 1, step)
            t0 = time.perf_counter()
            pub.publish(step)
            t1 = time.perf_counter()
            pub.wait_released(step)
            print("[%s] v%d published in %.3f s, released after %.3f s"
                  % (who, step, t1 - t0, time.perf_counter() - t1), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except refit.RefitError as e:
        print("trainer_loop: %s" % e, file=sys.stderr)
        sys.exit(1)
