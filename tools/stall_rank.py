#!/usr/bin/env python3
"""Stall one rank of a 2-rank zero-sft job with SIGSTOP and measure what the others do.

    tools/stall_rank.py [--binary PATH] [--timeout S] [--stage N] [--stop-rank R] [--sample S] [-- extra train args]

Starts `launch/run -n 2 -- train` on a tiny preset and synthetic data, waits until step 3 is logged,
sends SIGSTOP to rank R, measures the CPU use of the other rank (utime + stime from /proc/PID/stat)
over --sample seconds, and reports how long the job took to end after the SIGSTOP (or kills it after
--give-up seconds when it hangs, as it did before the collective timeout). Python 3 standard library.
"""
import argparse, json, os, random, signal, subprocess, sys, tempfile, time

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
parser = argparse.ArgumentParser()
parser.add_argument("--binary", default=os.path.join(root, ".build/release/zero-sft"))
parser.add_argument("--timeout", type=float, default=5, help="--collective-timeout (0: leave the option out)")
parser.add_argument("--stage", type=int, default=3)
parser.add_argument("--model", default="tiny")
parser.add_argument("--stop-rank", type=int, default=1)
parser.add_argument("--sample", type=float, default=3)
parser.add_argument("--give-up", type=float, default=40)
parser.add_argument("extra", nargs="*")
args = parser.parse_args()

work = tempfile.mkdtemp(prefix="zero-sft-stall-")
data = os.path.join(work, "data.jsonl")
rng = random.Random(1)
with open(data, "w") as f:
    for _ in range(160):
        n = rng.randint(6, 40); p = rng.randint(1, n - 2); s = rng.randint(0, 199); st = rng.randint(1, 3)
        ids = [(s + st * k) % 256 for k in range(n)]
        f.write(json.dumps({"input_ids": ids, "labels": [-100 if k < p else ids[k] for k in range(n)]}) + "\n")
metrics = os.path.join(work, "metrics.jsonl")
command = [os.path.join(root, "launch/run"), "-n", "2", "--", "train", "--model", args.model, "--data", data,
           "--seq-len", "64", "--max-steps", "100000", "--micro-batch-size", "2", "--zero-stage", str(args.stage),
           "--metrics-file", metrics] + (["--collective-timeout", str(args.timeout)] if args.timeout else []) + args.extra
env = dict(os.environ, ZERO_SFT_BINARY=args.binary, OPENBLAS_NUM_THREADS="1")
job = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)

def ranks():
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit(): continue
        try:
            if os.readlink(f"/proc/{entry}/exe") != os.path.realpath(args.binary): continue
            environ = open(f"/proc/{entry}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        for item in environ:
            if item.startswith(b"OMPI_COMM_WORLD_RANK=") and metrics.encode() in open(f"/proc/{entry}/cmdline", "rb").read():
                found[int(item.split(b"=")[1])] = int(entry)
    return found

def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

deadline = time.time() + 120
while time.time() < deadline and (not os.path.exists(metrics) or len(open(metrics).read().splitlines()) < 3):
    time.sleep(0.05)
pids = ranks()
if len(pids) != 2:
    print("could not find both ranks:", pids); os.killpg(job.pid, signal.SIGKILL); sys.exit(1)
other = pids[1 - args.stop_rank]
os.kill(pids[args.stop_rank], signal.SIGSTOP)
stopped = time.time()
time.sleep(0.5)  # let the other rank reach its wait
before = cpu_seconds(other); t0 = time.time()
time.sleep(args.sample)
try:
    cpu = (cpu_seconds(other) - before) / (time.time() - t0)
    print(f"rank {1 - args.stop_rank} CPU while rank {args.stop_rank} is stopped: {100 * cpu:.1f}% of a core")
except OSError:
    print(f"rank {1 - args.stop_rank} ended within {time.time() - stopped:.1f} s, before the CPU sample finished")
try:
    out, err = job.communicate(timeout=max(1, args.give_up - (time.time() - stopped)))
    print(f"job ended {time.time() - stopped:.1f} s after the SIGSTOP with status {job.returncode}")
    print("\n".join(line for line in err.splitlines() if line.startswith("zero-sft:")))
except subprocess.TimeoutExpired:
    print(f"job still running {time.time() - stopped:.1f} s after the SIGSTOP: killed")
    os.killpg(job.pid, signal.SIGKILL)
    for pid in pids.values():
        try: os.kill(pid, signal.SIGKILL)
        except OSError: pass
    job.wait()
