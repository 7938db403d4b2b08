#!/usr/bin/env python3
"""Writes the fixtures of Tests/CheckpointsTests/Fixtures/ with the reference Python packages.

Run with the project venv:  /opt/venv/bin/python tools/generate_checkpoint_fixtures.py

References: `gguf` (GGUFWriter, gguf.quants.quantize/dequantize, GGUFReader) for GGUF files and their
dequantised values; `safetensors` (save_file) for safetensors files. Goldens are raw little-endian
float32 files (`*.f32`) plus JSON manifests, so that the Swift tests need no Python.

Outputs (all small, tens of KB in total):
  gguf/types.gguf, gguf/types.json, gguf/types.<tensor>.f32
      One tensor per supported ggml type (2-D shapes with several blocks per row, some 1-D), and one
      metadata key per GGUF value type (nested arrays included). Quantised data comes from
      gguf.quants.quantize where the package can quantise (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, BF16) and from
      random bytes with sane f16 scales for the K-quants (the package only dequantises those; random
      bytes exercise every bit pattern). Goldens come from gguf.quants.dequantize; Q8_K, which the
      package cannot dequantise, follows ggml's formula d * q in numpy.
  gguf/aligned64_v2.gguf (+ .json/.f32 goldens): general.alignment = 64, version field patched to 2.
  safetensors/{f32,f16,bf16,mixed}.safetensors + .json manifests + .f32 goldens.
  safetensors/sharded/model-0000{1,2}-of-00002.safetensors + model.safetensors.index.json (+ goldens).
  writer/source.<tensor>.f32 and writer/reference_{f32,f16,bf16}.safetensors: the Swift writer must
      reproduce these files byte for byte from the source values.
  smollm2/goldens.json: counts, shapes, metadata and exact checksums of dequantised tensors of the real
      models/SmolLM2-135M-Instruct.Q4_1.gguf (skipped, keeping the old file, if the model is missing;
      run launch/fetch-smollm2 first).

Writer check: after `swift test --filter Checkpoints` has run, the test suite leaves a file written by our
SafetensorsWriter at $TMPDIR/zero-sft-checkpoints/writer-check.safetensors (or pass --check-writer PATH).
This script loads it with the safetensors package and prints whether names, shapes, dtypes, metadata and
values match the reference.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import gguf
from gguf import GGMLQuantizationType as T, GGUFValueType as V
from safetensors.torch import save_file, load_file
from safetensors import safe_open

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "Tests" / "CheckpointsTests" / "Fixtures"
MODEL = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
WRITER_CHECK_DEFAULT = Path(os.environ.get("TMPDIR", tempfile.gettempdir())) / "zero-sft-checkpoints" / "writer-check.safetensors"

rng = np.random.default_rng(20240531)


def write_f32(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.ascontiguousarray(values, dtype="<f4").tofile(path)


def checksum(values: np.ndarray) -> int:
    """Position-weighted sum of the float32 bit patterns, mod 2^64: sum_i bits[i] * (2i + 1).

    Any changed bit of any element changes it (weights are odd, hence invertible mod 2^64)."""
    bits = np.ascontiguousarray(values, dtype="<f4").reshape(-1).view("<u4").astype(np.uint64)
    weights = np.arange(bits.size, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    with np.errstate(over="ignore"):
        return int(np.sum(bits * weights, dtype=np.uint64))


# ---------------------------------------------------------------- GGUF: one tensor per type

def f16_bytes(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float16).view(np.uint8).reshape(values.shape + (2,))


def random_k_blocks(qtype: T, n_blocks: int) -> np.ndarray:
    """Random K-quant blocks with finite, moderate f16 scale fields (d, dmin) and random everything else."""
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    d = rng.uniform(0.002, 0.05, size=n_blocks)
    dmin = rng.uniform(0.001, 0.02, size=n_blocks)
    if qtype == T.Q2_K:      # scales[16] qs[64] d dmin
        blocks[:, 80:82] = f16_bytes(d)
        blocks[:, 82:84] = f16_bytes(dmin)
    elif qtype == T.Q3_K:    # hmask[32] qs[64] scales[12] d
        blocks[:, 108:110] = f16_bytes(d)
    elif qtype in (T.Q4_K, T.Q5_K):  # d dmin scales[12] ...
        blocks[:, 0:2] = f16_bytes(d)
        blocks[:, 2:4] = f16_bytes(dmin)
    elif qtype == T.Q6_K:    # ql[128] qh[64] scales[16] d
        blocks[:, 208:210] = f16_bytes(d)
    elif qtype == T.Q8_K:    # f32 d, qs[256], bsums[16]
        blocks[:, 0:4] = d.astype("<f4").view(np.uint8).reshape(n_blocks, 4)
    else:
        raise ValueError(qtype)
    return blocks


def dequantize_reference(raw: np.ndarray, qtype: T, shape: tuple[int, ...]) -> np.ndarray:
    if qtype == T.Q8_K:
        blocks = raw.reshape(-1, 292)
        d = blocks[:, 0:4].copy().view("<f4")
        q = blocks[:, 4:260].view(np.int8).astype(np.float32)
        return (d * q).astype(np.float32).reshape(shape)
    return gguf.quants.dequantize(raw, qtype).reshape(shape)


def gguf_type_tensors() -> list[tuple[str, T, tuple[int, ...], np.ndarray, np.ndarray]]:
    """(name, type, HF shape, stored array for GGUFWriter, float32 golden)."""
    out = []

    def plain(name, shape, values, stored):
        out.append((name, None, shape, stored, values.astype(np.float32)))

    x = rng.standard_normal((3, 40)).astype(np.float32)
    x[0, :4] = [0.0, -0.0, 1e-38, -3.0e38]
    plain("plain.f32", (3, 40), x, x)
    x = rng.standard_normal(7).astype(np.float32)
    plain("plain.f32_1d", (7,), x, x)
    h = (rng.standard_normal((5, 24)) * 4).astype(np.float16)
    h[0, :6] = [np.inf, -np.inf, 6e-8, -6e-5, 65504, -0.0]  # subnormals, extremes
    plain("plain.f16", (5, 24), h.astype(np.float32), h)
    d = rng.standard_normal((3, 5)) * 1e3
    plain("plain.f64", (3, 5), d.astype(np.float32), d.astype(np.float64))
    for name, dtype, lo, hi in (("i8", np.int8, -128, 128), ("i16", np.int16, -32768, 32768),
                                ("i32", np.int32, -2**31, 2**31), ("i64", np.int64, -2**40, 2**40)):
        v = rng.integers(lo, hi, size=(2, 6)).astype(dtype)
        plain(f"plain.{name}", (2, 6), v.astype(np.float32), v)

    quantisable = [
        ("quant.bf16", T.BF16, (4, 18)),
        ("quant.q4_0", T.Q4_0, (3, 96)),
        ("quant.q4_0_1d", T.Q4_0, (64,)),
        ("quant.q4_1", T.Q4_1, (5, 64)),
        ("quant.q5_0", T.Q5_0, (2, 96)),
        ("quant.q5_1", T.Q5_1, (3, 64)),
        ("quant.q8_0", T.Q8_0, (4, 96)),
        ("quant.q8_0_1d", T.Q8_0, (32,)),
    ]
    for name, qtype, shape in quantisable:
        values = (rng.standard_normal(shape) * rng.uniform(0.1, 3)).astype(np.float32)
        if qtype == T.BF16:
            values.reshape(-1)[:4] = [np.inf, -np.inf, 1e-40, -0.0]
        raw = gguf.quants.quantize(values, qtype)
        out.append((name, qtype, shape, raw, dequantize_reference(raw, qtype, shape)))

    k_quants = [
        ("kquant.q2_k", T.Q2_K, (2, 512)),
        ("kquant.q3_k", T.Q3_K, (3, 256)),
        ("kquant.q4_k", T.Q4_K, (2, 768)),
        ("kquant.q4_k_1d", T.Q4_K, (256,)),
        ("kquant.q5_k", T.Q5_K, (2, 512)),
        ("kquant.q6_k", T.Q6_K, (3, 512)),
        ("kquant.q8_k", T.Q8_K, (2, 256)),
    ]
    for name, qtype, shape in k_quants:
        n = int(np.prod(shape))
        raw = random_k_blocks(qtype, n // 256)
        raw = raw.reshape(shape[:-1] + (shape[-1] // 256 * raw.shape[1],))
        out.append((name, qtype, shape, raw, dequantize_reference(raw, qtype, shape)))
    return out


def add_metadata_of_every_type(writer: gguf.GGUFWriter) -> None:
    writer.add_uint8("test.uint8", 200)
    writer.add_int8("test.int8", -100)
    writer.add_uint16("test.uint16", 60000)
    writer.add_int16("test.int16", -30000)
    writer.add_uint32("test.uint32", 4_000_000_000)
    writer.add_int32("test.int32", -2_000_000_000)
    writer.add_uint64("test.uint64", 2**63 + 5)
    writer.add_int64("test.int64", -(2**62))
    writer.add_float32("test.float32", 3.25)
    writer.add_float64("test.float64", -1.0e300)
    writer.add_bool("test.bool", True)
    writer.add_string("test.string", "héllo ✓")
    writer.add_key_value("test.empty_string", "", V.STRING)
    writer.add_array("test.array.int32", [1, -2, 3])
    writer.add_key_value("test.array.uint8", [0, 7, 255], V.ARRAY, sub_type=V.UINT8)
    writer.add_key_value("test.array.float32", [0.5, -1.5], V.ARRAY, sub_type=V.FLOAT32)
    writer.add_key_value("test.array.float64", [0.1], V.ARRAY, sub_type=V.FLOAT64)
    writer.add_array("test.array.string", ["a", "bc", ""])
    writer.add_array("test.array.bool", [True, False])
    writer.add_array("test.array.nested", [[1, 2], [3]])


def write_gguf_types() -> None:
    directory = FIXTURES / "gguf"
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("types.*"):
        old.unlink()
    path = directory / "types.gguf"
    writer = gguf.GGUFWriter(str(path), arch="testarch")
    add_metadata_of_every_type(writer)
    manifest = []
    for name, qtype, shape, stored, golden in gguf_type_tensors():
        if qtype is None:
            writer.add_tensor(name, stored)
        else:
            writer.add_tensor(name, stored, raw_dtype=qtype)
        golden_name = f"types.{name}.f32"
        write_f32(directory / golden_name, golden)
        manifest.append({"name": name, "shape": list(shape), "golden": golden_name})
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    # Cross-check with the package's reader: types and HF shapes as we expect them.
    reader = gguf.GGUFReader(str(path))
    by_name = {t.name: t for t in reader.tensors}
    for entry in manifest:
        t = by_name[entry["name"]]
        entry["dtype"] = t.tensor_type.name.lower()
        assert list(reversed(t.shape.tolist())) == entry["shape"], (entry, t.shape)
    (directory / "types.json").write_text(json.dumps({"file": "types.gguf", "tensors": manifest}, indent=1) + "\n")
    print(f"wrote {path.relative_to(REPO)}: {len(manifest)} tensors, {path.stat().st_size} bytes")


def write_gguf_aligned_v2() -> None:
    directory = FIXTURES / "gguf"
    path = directory / "aligned64_v2.gguf"
    writer = gguf.GGUFWriter(str(path), arch="testarch")
    writer.add_custom_alignment(64)
    a = np.array([1.5, -2.0, 3.25], dtype=np.float32)
    values = rng.standard_normal((2, 32)).astype(np.float32)
    raw = gguf.quants.quantize(values, T.Q8_0)
    writer.add_tensor("a", a)
    writer.add_tensor("b", raw, raw_dtype=T.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    data = bytearray(path.read_bytes())
    assert struct.unpack_from("<I", data, 4)[0] == 3
    struct.pack_into("<I", data, 4, 2)  # v2 and v3 share the little-endian layout
    path.write_bytes(bytes(data))
    reader = gguf.GGUFReader(str(path))
    offsets = {t.name: int(t.data_offset) for t in reader.tensors}
    golden_b = dequantize_reference(raw, T.Q8_0, (2, 32))
    write_f32(directory / "aligned64_v2.b.f32", golden_b)
    (directory / "aligned64_v2.json").write_text(json.dumps({
        "file": "aligned64_v2.gguf", "alignment": 64, "version": 2,
        "absolute_offsets": offsets, "a": a.tolist(), "b_golden": "aligned64_v2.b.f32"}, indent=1) + "\n")
    print(f"wrote {path.relative_to(REPO)}: offsets {offsets}")


# ---------------------------------------------------------------- safetensors

def save_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)


def manifest_for(directory: Path, stem: str, tensors: dict[str, torch.Tensor]) -> list[dict]:
    manifest = []
    for name, tensor in tensors.items():
        golden_name = f"{stem}.{name}.f32"
        write_f32(directory / golden_name, tensor.to(torch.float32).numpy())
        manifest.append({"name": name, "shape": list(tensor.shape),
                         "dtype": str(tensor.dtype).removeprefix("torch."), "golden": golden_name})
    return manifest


def write_safetensors_fixtures() -> None:
    directory = FIXTURES / "safetensors"
    if directory.exists():
        for old in directory.rglob("*"):
            if old.is_file():
                old.unlink()
    directory.mkdir(parents=True, exist_ok=True)

    base = {
        "model.embed_tokens.weight": torch.randn(6, 5, generator=torch.Generator().manual_seed(1)),
        "model.layers.0.self_attn.q_proj.weight": torch.randn(4, 5, generator=torch.Generator().manual_seed(2)) * 3,
        "model.norm.weight": torch.linspace(-2, 2, 5),
        "scalar": torch.tensor(7.5),
        "empty": torch.zeros(0, 3),
    }
    for stem, dtype in (("f32", torch.float32), ("f16", torch.float16), ("bf16", torch.bfloat16)):
        tensors = {k: v.to(dtype).contiguous() for k, v in base.items()}
        save_safetensors(directory / f"{stem}.safetensors", tensors, {"format": "pt"})  # one key: Rust HashMap order is random
        manifest = manifest_for(directory, stem, tensors)
        (directory / f"{stem}.json").write_text(json.dumps(
            {"file": f"{stem}.safetensors", "metadata": {"format": "pt"}, "tensors": manifest}, indent=1) + "\n")

    mixed = {
        "f64": torch.tensor([[1.0e-3, -2.5, 1.0e30]], dtype=torch.float64),
        "i64": torch.tensor([-(2**40), 0, 2**24 + 1], dtype=torch.int64),
        "i32": torch.tensor([-7, 123456789], dtype=torch.int32),
        "i16": torch.tensor([-32768, 32767], dtype=torch.int16),
        "i8": torch.tensor([-128, 5], dtype=torch.int8),
        "u8": torch.tensor([0, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "f16": torch.tensor([0.1, 65504.0], dtype=torch.float16),
    }
    save_safetensors(directory / "mixed.safetensors", mixed, None)
    (directory / "mixed.json").write_text(json.dumps(
        {"file": "mixed.safetensors", "metadata": {}, "tensors": manifest_for(directory, "mixed", mixed)}, indent=1) + "\n")

    sharded = directory / "sharded"
    shard_tensors = [
        {"model.embed_tokens.weight": base["model.embed_tokens.weight"],
         "model.layers.0.self_attn.q_proj.weight": base["model.layers.0.self_attn.q_proj.weight"]},
        {"model.norm.weight": base["model.norm.weight"], "lm_head.weight": torch.arange(12.0).reshape(3, 4)},
    ]
    weight_map, total = {}, 0
    manifest = []
    for index, tensors in enumerate(shard_tensors, start=1):
        shard_name = f"model-{index:05d}-of-{len(shard_tensors):05d}.safetensors"
        save_safetensors(sharded / shard_name, tensors, {"format": "pt"})
        for name, tensor in tensors.items():
            weight_map[name] = shard_name
            total += tensor.numel() * tensor.element_size()
        manifest += manifest_for(sharded, "golden", tensors)
    (sharded / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, indent=2) + "\n")
    (sharded / "golden.json").write_text(json.dumps({"tensors": manifest}, indent=1) + "\n")
    print(f"wrote safetensors fixtures in {directory.relative_to(REPO)}")


# ---------------------------------------------------------------- writer references

WRITER_SHAPES = {
    "model.layers.10.mlp.down_proj.weight": (3, 4),
    "model.layers.2.mlp.down_proj.weight": (2, 5),
    "lm_head.weight": (4, 3),
    "Zeta.bias": (6,),
    "model.norm.weight": (5,),
}
WRITER_METADATA = {"format": "pt"}


def writer_sources() -> dict[str, np.ndarray]:
    g = np.random.default_rng(7)
    sources = {}
    for name, shape in WRITER_SHAPES.items():
        sources[name] = (g.standard_normal(shape) * 2).astype(np.float32)
    edge = sources["model.norm.weight"]
    # Rounding edge cases: f16 halfway points, f16 overflow, bf16 halfway points, tiny values.
    edge[:] = [1.0 + 2.0**-11, 70000.0, 1.0 + 2.0**-8 + 2.0**-16, -1.0 - 2.0**-8, 1e-8]
    sources["Zeta.bias"][:] = [2.0**-24, 3 * 2.0**-25, -0.0, 65519.0, 65520.0, 3.0e38]
    return sources


def write_writer_references() -> None:
    directory = FIXTURES / "writer"
    if directory.exists():
        for old in directory.iterdir():
            old.unlink()
    directory.mkdir(parents=True, exist_ok=True)
    sources = writer_sources()
    manifest = []
    for name, values in sources.items():
        write_f32(directory / f"source.{name}.f32", values)
        manifest.append({"name": name, "shape": list(values.shape), "source": f"source.{name}.f32"})
    for stem, dtype in (("f32", torch.float32), ("f16", torch.float16), ("bf16", torch.bfloat16)):
        tensors = {k: torch.from_numpy(v).to(dtype) for k, v in sources.items()}
        save_file(tensors, str(directory / f"reference_{stem}.safetensors"), metadata=WRITER_METADATA)
    (directory / "writer.json").write_text(json.dumps(
        {"metadata": WRITER_METADATA, "tensors": manifest,
         "references": {"f32": "reference_f32.safetensors", "f16": "reference_f16.safetensors",
                        "bf16": "reference_bf16.safetensors"}}, indent=1) + "\n")
    print(f"wrote writer references in {directory.relative_to(REPO)}")


def check_writer_output(path: Path) -> bool:
    """Loads a file written by our SafetensorsWriter with the safetensors package and compares it."""
    if not path.exists():
        print(f"writer check: {path} not found (run `swift test --filter CheckpointsTests` first); skipped")
        return True
    sources = writer_sources()
    ok = True
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
        keys = list(f.keys())
    loaded = load_file(str(path))
    if metadata != {"origin": "zero-sft SafetensorsWriter", "dtype": "bf16"}:
        print(f"writer check: unexpected metadata {metadata}")
        ok = False
    if sorted(keys) != sorted(sources):
        print(f"writer check: tensor names {sorted(keys)} != {sorted(sources)}")
        ok = False
    for name, values in sources.items():
        tensor = loaded.get(name)
        expected = torch.from_numpy(values).to(torch.bfloat16)
        if tensor is None or tensor.dtype != torch.bfloat16 or tuple(tensor.shape) != values.shape \
                or not torch.equal(tensor.view(torch.int16), expected.view(torch.int16)):
            print(f"writer check: tensor {name} differs: {tensor} vs {expected}")
            ok = False
    print(f"writer check: {path} {'loads with the safetensors package and matches' if ok else 'FAILED'}"
          f" ({len(keys)} tensors, metadata {metadata})")
    return ok


# ---------------------------------------------------------------- the real model

SMOLLM2_TENSORS = ["token_embd.weight", "blk.0.attn_q.weight", "blk.0.attn_k.weight",
                   "blk.0.attn_norm.weight", "blk.29.ffn_down.weight"]


def write_smollm2_goldens() -> None:
    out = FIXTURES / "smollm2" / "goldens.json"
    if not MODEL.exists():
        print(f"{MODEL} missing (run launch/fetch-smollm2); keeping {out.relative_to(REPO)}")
        return
    reader = gguf.GGUFReader(str(MODEL))
    by_name = {t.name: t for t in reader.tensors}
    shapes = {t.name: list(reversed(t.shape.tolist())) for t in reader.tensors
              if t.name in ("token_embd.weight", "blk.0.attn_q.weight", "blk.0.attn_k.weight",
                            "blk.0.attn_v.weight", "blk.0.ffn_gate.weight", "blk.0.ffn_down.weight",
                            "blk.0.attn_norm.weight", "output_norm.weight")}
    tensors = {}
    for name in SMOLLM2_TENSORS:
        t = by_name[name]
        values = gguf.quants.dequantize(t.data, t.tensor_type).reshape(-1).astype(np.float32)
        n = values.size
        indices = sorted(i for i in {0, 1, 31, 32, 33, 255, 256, 1000, n // 2 + 17, n - 33, n - 1} if i < n)
        start = min(12345, n - 100)
        tensors[name] = {
            "dtype": t.tensor_type.name.lower(),
            "element_count": n,
            "sum": math.fsum(values.astype(np.float64)),
            "checksum": str(checksum(values)),
            "values": {str(i): float(values[i]) for i in indices},
            "slice_start": start,
            "slice": [float(v) for v in values[start:start + 100]],
        }
    field = reader.fields
    goldens = {
        "file": "models/SmolLM2-135M-Instruct.Q4_1.gguf",
        "version": int(field["GGUF.version"].contents()),
        "tensor_count": len(reader.tensors),
        "metadata_count": len(reader.fields) - 3,  # GGUFReader adds GGUF.version/tensor_count/kv_count
        "architecture": field["general.architecture"].contents(),
        "block_count": int(field["llama.block_count"].contents()),
        "token_count": len(field["tokenizer.ggml.tokens"].contents()),
        "token_1000": field["tokenizer.ggml.tokens"].contents()[1000],
        "rms_epsilon": float(field["llama.attention.layer_norm_rms_epsilon"].contents()),
        "dtype_counts": {k: sum(1 for t in reader.tensors if t.tensor_type.name.lower() == k)
                         for k in sorted({t.tensor_type.name.lower() for t in reader.tensors})},
        "shapes": shapes,
        "tensors": tensors,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(goldens, indent=1) + "\n")
    print(f"wrote {out.relative_to(REPO)} from {MODEL.name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check-writer", type=Path, default=WRITER_CHECK_DEFAULT,
                        help=f"a file written by SafetensorsWriter to verify (default {WRITER_CHECK_DEFAULT})")
    parser.add_argument("--check-only", action="store_true", help="only run the writer check")
    args = parser.parse_args()
    if not args.check_only:
        write_gguf_types()
        write_gguf_aligned_v2()
        write_safetensors_fixtures()
        write_writer_references()
        write_smollm2_goldens()
        total = sum(p.stat().st_size for p in FIXTURES.rglob("*") if p.is_file())
        print(f"fixtures total: {total} bytes")
    if not check_writer_output(args.check_writer):
        sys.exit(1)


if __name__ == "__main__":
    main()
