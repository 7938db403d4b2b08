#!/usr/bin/env python3
"""PyTorch's side of `launch/bench-vs-torch`: the SFT step `zero-sft bench` times, in transformers.

The step is the one `zero-sft bench --micro-batch-size B --seq-len T --supervised-fraction F` runs
(Sources/zero-sft/BenchCommand.swift), on the same weights and the same token ids:

- the model: `LlamaForCausalLM.from_pretrained(DIR)` in fp32, where DIR is what
  `zero-sft export --model smollm2-135m --seed 42 --out DIR` wrote: the preset's config.json and
  zero-sft's own random initialisation (the one `bench` starts from: its seed is 42);
- the rows: B rows of T tokens per rank per step, drawn from bench's generator (the 64-bit LCG
  `state = state · 6364136223846793005 + 1442695040888963407`, `id = (state >> 33) mod V`, from
  state 12345), row after row; labels are -100 on the first `int(T · (1 − F))` positions of each row
  and the token ids after (HF's unshifted convention: transformers shifts them, as zero-sft does);
  step s of N ranks takes rows `s·N·B …` and rank r the rows `r, r + N, …` of them (bench's deal);
- the optimizer: `torch.optim.AdamW` with zero-sft's defaults (lr 2e-5, betas 0.9/0.999, eps 1e-8,
  no weight decay), the global gradient norm clipped to 1, the cosine schedule over `steps + 1`
  steps without warm-up (zero-sft's `LearningRateSchedule`);
- one untimed warm-up step, then `--steps` timed steps, each `zero_grad`, forward with labels,
  backward, clip, `optimizer.step()`.

It prints the warm-up step's loss (the loss of the initial weights: `zero-sft bench` prints the same
as `warmup_loss`), seconds per step, tokens/s, model GFLOP/s with bench's convention (docs/benchmarks.md)
and the GFLOP/s of torch's own sgemm on the model's largest matmul, `(B·T, C) × (F, C)ᵀ`, measured in
the same process after the steps; the last line is JSON.

    python tools/torch_sft_step.py step --model DIR [--threads T] [--steps N]
    python tools/torch_sft_step.py fsdp --model DIR [--ranks 2] [--threads 1] [--steps N]

`fsdp` runs the step on `--ranks` processes on this host (torch.multiprocessing, gloo) with FSDP2
(`torch.distributed.fsdp.fully_shard` on every decoder layer and on the root), each rank B × T tokens
of its own rows; tokens/s is the total over ranks, GFLOP/s is per rank. Needs torch ≥ 2.6 and
transformers; launch/bench-venv makes such an environment.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import socket
import statistics
import sys
import time


def rows(count: int, seq_len: int, vocab: int) -> list[list[int]]:
    """The first `count` rows of `zero-sft bench`'s token stream (BenchCommand.run's `next()`)."""
    state, out = 12345, []
    mask = (1 << 64) - 1
    for _ in range(count):
        row = []
        for _ in range(seq_len):
            state = (state * 6364136223846793005 + 1442695040888963407) & mask
            row.append((state >> 33) % vocab)
        out.append(row)
    return out


def batch(step: int, rank: int, ranks: int, micro_batch: int, seq_len: int, fraction: float, vocab: int):
    """input_ids and labels, (B, T) int64, of `rank` at `step`, as bench's plan deals them."""
    import torch

    stream = rows((step + 1) * ranks * micro_batch, seq_len, vocab)
    step_rows = stream[step * ranks * micro_batch:(step + 1) * ranks * micro_batch]
    # TrainingPlan.deal: equal rows go round-robin to the ranks, longest first, ties in order.
    mine = step_rows[rank::ranks]
    ids = torch.tensor(mine, dtype=torch.long)
    labels = ids.clone()
    labels[:, :int(seq_len * (1 - fraction))] = -100
    return ids, labels


def model_flops(config, parameters: int, tokens: int, supervised: int, seq_len: int) -> float:
    """bench's model FLOPs for one step (docs/benchmarks.md): body, output head on labelled positions, attention."""
    embedding = config.vocab_size * config.hidden_size
    body = 6 * (parameters - (embedding if config.tie_word_embeddings else 2 * embedding)) * tokens
    head = 6 * embedding * supervised
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    attention = 6 * config.num_hidden_layers * config.num_attention_heads * head_dim * seq_len * tokens
    return body + head + attention


def sgemm_gflops(tokens: int, config, repeats: int = 10, precision: str = "fp32", timings: int = 5) -> float:
    """GFLOP/s of `(tokens, C) × (F, C)ᵀ` from fp32 tensors (BenchCommand.measureSgemm's shape and fill):
    the best of `timings` timings of `repeats` products each, as zero-sft measures its own; with precision
    bf16 under autocast, as the step's matmuls run (operands cast to bf16 on each call)."""
    import torch

    m, n, k = tokens, config.intermediate_size, config.hidden_size
    a = (torch.arange(m * k) % 13).float().mul_(0.01).reshape(m, k)
    b = (torch.arange(n * k) % 7).float().mul_(0.01).reshape(n, k)
    best = 0.0
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        torch.nn.functional.linear(a, b)
        for _ in range(timings):
            start = time.perf_counter()
            for _ in range(repeats):
                torch.nn.functional.linear(a, b)
            best = max(best, 2 * m * n * k * repeats / (time.perf_counter() - start) / 1e9)
    return best


def cosine(step: int, total: int, peak: float) -> float:
    """zero-sft's LearningRateSchedule without warm-up and with minimum 0."""
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, total))))


def peak_rss() -> int:
    """This process's peak resident set in bytes (getrusage: ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def train(args, rank: int, ranks: int, distributed: bool) -> dict:
    """Loads the model, runs warm-up + timed steps on this rank; returns this rank's figures."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model.config.use_cache = False
    model.train()
    config = model.config
    parameters = sum(p.numel() for p in model.parameters())  # the tied embedding once
    if distributed:
        from torch.distributed.fsdp import fully_shard

        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    total = args.steps + 1
    losses, seconds = [], []
    for step in range(total):
        ids, labels = batch(step, rank, ranks, args.micro_batch_size, args.seq_len, args.supervised_fraction, config.vocab_size)
        if distributed:
            torch.distributed.barrier()
        start = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = cosine(step, total, args.lr)
        optimizer.zero_grad(set_to_none=True)
        # bf16: autocast's matmuls in bf16 (fp32 master weights, gradients, optimizer), as zero-sft --precision bf16.
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        value = loss.detach()
        if distributed:
            torch.distributed.all_reduce(value)  # every rank has the same number of labels: the mean of means
            value /= ranks
        seconds.append(time.perf_counter() - start)
        losses.append(float(value))
        if rank == 0:
            print(f"torch step {step}{' (warm-up, untimed)' if step == 0 else ''}: {seconds[-1]:.3f} s, loss {losses[-1]:.6f}",
                  file=sys.stderr, flush=True)
    tokens = args.micro_batch_size * args.seq_len
    supervised = args.micro_batch_size * (args.seq_len - max(1, int(args.seq_len * (1 - args.supervised_fraction))))
    timed = sum(seconds[1:])
    flops = model_flops(config, parameters, tokens, supervised, args.seq_len)
    if distributed:
        torch.distributed.barrier()
    sgemm = sgemm_gflops(tokens, config, precision=args.precision)
    return {"timed_seconds": timed, "step_seconds": timed / args.steps, "gflops": flops * args.steps / timed / 1e9,
            "sgemm_gflops": sgemm, "warmup_loss": losses[0], "losses": losses, "peak_rss": peak_rss(),
            "parameters": parameters, "tokens": tokens, "attention": getattr(config, "_attn_implementation", "?")}


def fsdp_worker(rank: int, args, port: int, queue) -> None:
    import torch

    torch.set_num_threads(args.threads)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=args.ranks)
    try:
        queue.put((rank, train(args, rank, args.ranks, distributed=True)))
    finally:
        torch.distributed.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def summary(per_rank: list[dict], args, ranks: int) -> dict:
    import torch

    first = per_rank[0]
    timed = max(r["timed_seconds"] for r in per_rank)
    return {
        "tokens_per_sec": ranks * first["tokens"] * args.steps / timed,
        "step_seconds": timed / args.steps,
        "gflops": statistics.mean(r["gflops"] for r in per_rank),
        "sgemm_gflops": statistics.mean(r["sgemm_gflops"] for r in per_rank),
        "warmup_loss": first["warmup_loss"], "losses": first["losses"],
        "peak_rss": max(r["peak_rss"] for r in per_rank), "peak_rss_per_rank": [r["peak_rss"] for r in per_rank],
        "ranks": ranks, "threads": args.threads, "parameters": first["parameters"],
        "torch": torch.__version__, "attention": first["attention"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["step", "fsdp"], help="step: one process; fsdp: FSDP2 on --ranks processes")
    parser.add_argument("--model", required=True, help="HF directory (zero-sft export --model smollm2-135m --out DIR)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads per process (default 2)")
    parser.add_argument("--ranks", type=int, default=2, help="fsdp: processes (default 2)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one untimed warm-up step (default 3)")
    parser.add_argument("--micro-batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--supervised-fraction", type=float, default=0.5)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="bf16: forward and loss under torch.autocast(cpu, bfloat16) (default fp32)")
    parser.add_argument("--lr", type=float, default=2e-5, help="peak learning rate (zero-sft's default)")
    args = parser.parse_args()
    if not os.path.isfile(os.path.join(args.model, "config.json")):
        sys.exit(f"torch_sft_step.py: {args.model}/config.json not found (write it with zero-sft export --model smollm2-135m --out DIR)")
    if args.steps < 1 or args.threads < 1 or args.ranks < 1 or not 0 < args.supervised_fraction <= 1:
        sys.exit("torch_sft_step.py: --steps, --threads and --ranks must be at least 1, --supervised-fraction in (0, 1]")
    import torch

    if args.mode == "step":
        torch.set_num_threads(args.threads)
        result = summary([train(args, 0, 1, distributed=False)], args, 1)
    else:
        import torch.multiprocessing as mp

        context = mp.get_context("spawn")
        queue = context.SimpleQueue()
        mp.start_processes(fsdp_worker, args=(args, free_port(), queue), nprocs=args.ranks, join=True, start_method="spawn")
        per_rank = [r for _, r in sorted((queue.get() for _ in range(args.ranks)), key=lambda x: x[0])]
        result = summary(per_rank, args, args.ranks)
    print(f"torch {result['torch']} ({result['attention']} attention), {result['ranks']} × {result['threads']} threads: "
          f"{result['step_seconds']:.3f} s/step, {result['tokens_per_sec']:.1f} tokens/s, {result['gflops']:.2f} GFLOP/s per rank "
          f"= {100 * result['gflops'] / result['sgemm_gflops']:.0f}% of sgemm ({result['sgemm_gflops']:.2f} GFLOP/s), "
          f"warm-up loss {result['warmup_loss']:.6f}, peak RSS/rank {result['peak_rss'] / 2**30:.2f} GiB")
    print(json.dumps(result, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
