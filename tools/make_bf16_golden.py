"""Golden fp32 -> bf16 roundings from PyTorch, for Tests/KernelsTests/BFloat16Tests.swift.

Writes Tests/KernelsTests/Fixtures/bf16_rounding.json: fp32 bit patterns (special values, ties to
even either way, NaNs with payloads and signs, subnormals, values that overflow to infinity, and
random patterns over the whole range) and the bf16 patterns `torch.tensor(...).to(torch.bfloat16)`
gives. Run with the reference venv: `$(launch/bench-venv) tools/make_bf16_golden.py`.
"""
import json
import pathlib
import random

import torch

special = [
    0x00000000, 0x80000000, 0x3F800000, 0xBF800000, 0x7F800000, 0xFF800000,  # 0, -0, 1, -1, inf, -inf
    0x7FC00000, 0xFFC00000, 0x7F800001, 0x7FFFFFFF, 0xFFFFFFFF, 0x7FC0FFFF,  # NaNs: quiet, signed, payloads
    0x00000001, 0x007FFFFF, 0x00008000, 0x00018000, 0x80008000,              # subnormals, ties among them
    0x7F7FFFFF, 0x7F7F7FFF, 0x7F7F8000, 0xFF7FFFFF,                          # largest floats: to inf or not
    0x3F808000, 0x3F818000, 0x3F807FFF, 0x3F808001, 0x3F818001, 0x3F817FFF,  # ties to even and neighbours
    0x40490FDB, 0xC0490FDB, 0x3EAAAAAB, 0x42F6E979,                          # pi, -pi, 1/3, 123.456
]
rng = random.Random(13)
patterns = special + [rng.getrandbits(32) for _ in range(3000)]
patterns += [int(x) & 0xFFFFFFFF for x in torch.randn(1000, generator=torch.Generator().manual_seed(5)).view(torch.int32).tolist()]
floats = torch.tensor([p - (1 << 32) if p >= 1 << 31 else p for p in patterns], dtype=torch.int32).view(torch.float32)
bf16 = floats.to(torch.bfloat16).view(torch.int16).tolist()
out = {
    "source": f"torch {torch.__version__}: tensor.to(torch.bfloat16)",
    "float_bits": patterns,
    "bf16_bits": [b & 0xFFFF for b in bf16],
}
path = pathlib.Path(__file__).resolve().parent.parent / "Tests/KernelsTests/Fixtures/bf16_rounding.json"
path.write_text(json.dumps(out) + "\n")
print(f"wrote {path} ({len(patterns)} values)")
