#!/usr/bin/env python3
"""nccl_bcast.py — the baseline of `refit bench gpu`: one flat NCCL broadcast
of N bytes from GPU 0 to GPU 1 with torch.distributed, two processes on this
host.  Prints one line: `nccl_bcast bytes=N median_s=S min_s=S gbps=G`.

    python3 tools/dev/gpu/nccl_bcast.py --bytes 8044000000 [--iters 10]
"""
import argparse
import os
import socket
import sys
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank, args, port, q):
    import torch
    import torch.distributed as dist
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", rank=rank, world_size=2)
    buf = torch.empty(args.bytes, dtype=torch.uint8, device="cuda")
    if rank == 0:
        buf.fill_(7)
    times = []
    for i in range(args.warmup + args.iters):
        torch.cuda.synchronize()
        dist.barrier()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        dist.broadcast(buf, src=0)
        torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    # Every receiver checks what it got (a broadcast that moved nothing is no baseline).
    ok = bool((buf[:: max(1, args.bytes // 4096)] == 7).all().item())
    if rank == 1:
        q.put((times, ok))
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bytes", type=int, required=True)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    try:
        import torch
        import torch.multiprocessing as mp
    except ImportError as e:
        print(f"nccl_bcast: PyTorch is needed for the NCCL baseline: {e}", file=sys.stderr)
        return 2
    if torch.cuda.device_count() < 2:
        print(f"nccl_bcast: two GPUs needed, {torch.cuda.device_count()} found", file=sys.stderr)
        return 2
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = free_port()
    ps = [ctx.Process(target=worker, args=(r, args, port, q)) for r in range(2)]
    for p in ps:
        p.start()
    times, ok = q.get(timeout=600)
    for p in ps:
        p.join()
    if not ok or any(p.exitcode for p in ps):
        print("nccl_bcast: the broadcast failed or delivered wrong bytes", file=sys.stderr)
        return 1
    times.sort()
    med = times[len(times) // 2]
    print(f"nccl_bcast bytes={args.bytes} median_s={med:.6f} min_s={times[0]:.6f} "
          f"gbps={args.bytes / med / 1e9:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
