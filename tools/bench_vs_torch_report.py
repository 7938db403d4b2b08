#!/usr/bin/env python3
"""Summarises `launch/bench-vs-torch`'s rounds: zero-sft's and PyTorch's JSON lines, one per round each.

    python tools/bench_vs_torch_report.py ZERO_SFT.jsonl TORCH.jsonl --ranks N --threads T [--label TEXT]

Prints per side the median tokens/s and each round's, GFLOP/s per rank, the sgemm GFLOP/s measured in the
same process and the fraction, the warm-up losses (the same initial weights and rows: they should agree to
about 1e-5), peak RSS per rank, then the ratio zero-sft / PyTorch of the medians and of each A B pair, the
CPU (model name and its avx2 / avx512f / avx512_bf16 flags from /proc/cpuinfo) and the load average.
The last line is one JSON object. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics


def cpu() -> dict:
    """The CPU model name and which of the vector extensions that matter here it has (/proc/cpuinfo)."""
    name, flags, family, model = "unknown", set(), "?", "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and name == "unknown":
                    name = value.strip()
                elif key.strip() == "cpu family" and family == "?":
                    family = value.strip()
                elif key.strip() == "model" and model == "?":
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    # The family and model numbers tell AMD's generations apart where the name does not (a VM's "AMD EPYC"):
    # family 25 is Zen 3 (models 0-15, 32-95) or Zen 4 (16-31, 96-127), family 26 Zen 5.
    return {"model": f"{name} (family {family}, model {model})", "cores": os.cpu_count(),
            "extensions": [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags]}


def load(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def side(rounds: list[dict]) -> dict:
    tps = [r["tokens_per_sec"] for r in rounds]
    return {
        "tokens_per_sec": statistics.median(tps), "tokens_per_sec_rounds": tps,
        "step_seconds": statistics.median(r["step_seconds"] for r in rounds),
        "gflops": statistics.median(r["gflops"] for r in rounds),
        "sgemm_gflops": statistics.median(r["sgemm_gflops"] for r in rounds),
        "fraction_of_sgemm": statistics.median(r["gflops"] / r["sgemm_gflops"] for r in rounds),
        "warmup_loss": [r.get("warmup_loss") for r in rounds],
        "peak_rss": max(r.get("peak_rss", 0) for r in rounds),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("zero_sft")
    parser.add_argument("torch")
    parser.add_argument("--ranks", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    a, b = load(args.zero_sft), load(args.torch)
    if not a or len(a) != len(b):
        raise SystemExit(f"bench_vs_torch_report.py: {len(a)} zero-sft rounds and {len(b)} PyTorch rounds")
    z, t = side(a), side(b)
    machine = cpu()
    load_average = os.getloadavg()
    print(f"\n{args.label}")
    print(f"CPU: {machine['model']} ({machine['cores']} logical cores; {', '.join(machine['extensions']) or 'no AVX2'}), "
          f"{args.ranks} rank(s) × {args.threads} thread(s), {len(a)} rounds A B A B, load average now "
          f"{load_average[0]:.2f} {load_average[1]:.2f} {load_average[2]:.2f}")
    for name, s in (("zero-sft", z), ("PyTorch", t)):
        rounds = " ".join(f"{x:.1f}" for x in s["tokens_per_sec_rounds"])
        losses = " ".join(f"{x:.6f}" if x is not None else "?" for x in s["warmup_loss"])
        print(f"  {name:9} {s['tokens_per_sec']:7.1f} tokens/s (rounds: {rounds}), {s['step_seconds']:.3f} s/step, "
              f"{s['gflops']:.2f} GFLOP/s per rank = {100 * s['fraction_of_sgemm']:.0f}% of in-run sgemm "
              f"({s['sgemm_gflops']:.2f} GFLOP/s), peak RSS/rank {s['peak_rss'] / 2**30:.2f} GiB, warm-up loss {losses}")
    pairs = [x["tokens_per_sec"] / y["tokens_per_sec"] for x, y in zip(a, b)]
    ratio = z["tokens_per_sec"] / t["tokens_per_sec"]
    print(f"  ratio zero-sft / PyTorch: {ratio:.3f}× tokens/s (median of each side; per A B pair: "
          f"{' '.join(f'{p:.3f}' for p in pairs)})")
    loss_gap = max((abs(x - y) for x, y in zip(z["warmup_loss"], t["warmup_loss"]) if x is not None and y is not None), default=None)
    if loss_gap is not None:
        print(f"  same work: warm-up losses differ by at most {loss_gap:.2e}")
    print(json.dumps({"zero_sft": z, "torch": t, "ratio": ratio, "pair_ratios": pairs, "cpu": machine,
                      "ranks": args.ranks, "threads": args.threads, "rounds": len(a), "warmup_loss_gap": loss_gap,
                      "load_average": load_average, "label": args.label}, sort_keys=True))


if __name__ == "__main__":
    main()
