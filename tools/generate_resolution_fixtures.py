#!/usr/bin/env python3
"""Writes Tests/ModelIOTests/Fixtures/resolution/: model directories that transformers resolves in a
particular way, and what transformers does with each (goldens.json). The Swift tests (ResolutionTests)
check that `--model DIR` resolves to the same weights, stop ids and values.

Run with the project venv (after tools/generate_model_fixtures.py, whose tiny-llama it starts from):
    /work/venv/bin/python tools/generate_resolution_fixtures.py

Directories (each ≈ 100 kB; the tiny Llama of generate_model_fixtures.py, tie_word_embeddings true):
  tied-head-differs/  config.json says tie_word_embeddings: true, but model.safetensors stores an
                      lm_head.weight that differs from model.embed_tokens.weight. transformers 5 warns
                      and does NOT tie (PreTrainedModel.tie_weights): goldens "tied_head_differs" holds
                      its loss on tiny-llama's example, and that it kept both tensors.
  single-and-index/   model.safetensors (the tiny Llama) and model.safetensors.index.json naming
                      model-00001-of-00001.safetensors (the same tensors × 0.5), as save_pretrained leaves
                      a directory re-saved in the other form. transformers reads model.safetensors
                      (_get_resolved_checkpoint_files): goldens "single_and_index" is its loss.
  inv-freq/           model.safetensors with the per-layer rotary_emb.inv_freq buffers old checkpoints
                      carry: transformers drops them silently (_adjust_missing_and_unexpected_keys).
  generation-eos/     config.json eos_token_id 2, generation_config.json eos_token_id [2, 7] (no weights: the
                      test copies tiny-llama's in): the stop ids transformers' generate uses (the
                      generation config's, even when it has none), in "generation_eos".
goldens also records Python's json rule for a repeated key (the last value wins) on a pre-tokenized line.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "Tests" / "ModelIOTests" / "Fixtures"
TINY = FIXTURES / "tiny-llama"
OUT = FIXTURES / "resolution"


def loss_of(directory: Path, goldens: dict) -> tuple[float, object]:
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    ids = torch.tensor([goldens["input_ids"]])
    labels = torch.tensor([goldens["labels"]])
    with torch.no_grad():
        return model(input_ids=ids, labels=labels).loss.item(), model


def fresh(name: str) -> Path:
    directory = OUT / name
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    shutil.copy(TINY / "config.json", directory / "config.json")
    return directory


class Captured(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def main() -> int:
    import transformers
    from transformers import GenerationConfig
    goldens_tiny = json.loads((TINY / "goldens.json").read_text())
    weights = load_file(str(TINY / "model.safetensors"))
    assert "lm_head.weight" not in weights, "tiny-llama is tied: save_pretrained stores no lm_head"
    captured = Captured()
    transformers.logging.get_logger("transformers.modeling_utils").addHandler(captured)
    goldens: dict = {"transformers_version": transformers.__version__, "tiny_llama_loss": goldens_tiny["loss"]}

    # 1. A tied config with a stored head that differs.
    directory = fresh("tied-head-differs")
    generator = torch.Generator().manual_seed(11)
    head = weights["model.embed_tokens.weight"] + 0.5 * torch.randn(weights["model.embed_tokens.weight"].shape, generator=generator)
    save_file({**weights, "lm_head.weight": head.contiguous()}, str(directory / "model.safetensors"), metadata={"format": "pt"})
    captured.messages.clear()
    loss, model = loss_of(directory, goldens_tiny)
    tied = model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert not tied and torch.equal(model.lm_head.weight, head), "transformers was expected not to tie a differing head"
    warned = [m for m in captured.messages if "NOT" in m and "tie" in m]
    goldens["tied_head_differs"] = {"loss": loss, "tied": tied, "warning": warned[0] if warned else None}
    print(f"tied-head-differs: loss {loss:.6f} (tied model: {goldens_tiny['loss']:.6f}); transformers tied: {tied}; warned: {bool(warned)}")

    # 2. model.safetensors and an index naming other weights.
    directory = fresh("single-and-index")
    shutil.copy(TINY / "model.safetensors", directory / "model.safetensors")
    halved = {name: (value * 0.5).contiguous() for name, value in weights.items()}
    shard = "model-00001-of-00001.safetensors"
    save_file(halved, str(directory / shard), metadata={"format": "pt"})
    index = {"metadata": {"total_size": sum(v.numel() * 4 for v in halved.values())},
             "weight_map": {name: shard for name in sorted(halved)}}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    loss, model = loss_of(directory, goldens_tiny)
    read_single = torch.equal(model.model.embed_tokens.weight, weights["model.embed_tokens.weight"])
    assert read_single, "transformers was expected to read model.safetensors"
    goldens["single_and_index"] = {"loss": loss, "reads": "model.safetensors"}
    print(f"single-and-index: transformers reads model.safetensors: {read_single}; loss {loss:.6f}")

    # 3. Old rotary_emb.inv_freq buffers.
    directory = fresh("inv-freq")
    config = json.loads((TINY / "config.json").read_text())
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    theta = config.get("rope_theta") or config.get("rope_parameters", {}).get("rope_theta", 10000.0)
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    buffers = {f"model.layers.{i}.self_attn.rotary_emb.inv_freq": inv_freq.clone() for i in range(config["num_hidden_layers"])}
    save_file({**weights, **buffers}, str(directory / "model.safetensors"), metadata={"format": "pt"})
    _, info = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, output_loading_info=True)
    loss, _ = loss_of(directory, goldens_tiny)
    assert not info["unexpected_keys"], info
    goldens["inv_freq"] = {"loss": loss, "unexpected_keys": sorted(info["unexpected_keys"])}
    print(f"inv-freq: unexpected keys {sorted(info['unexpected_keys'])}; loss {loss:.6f}")

    # 4. Stop ids: generation_config.json takes precedence over config.json.
    directory = fresh("generation-eos")
    config["eos_token_id"] = 2
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    (directory / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": [2, 7]}, indent=2))
    shutil.copy(TINY / "model.safetensors", directory / "model.safetensors")
    model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    eos = model.generation_config.eos_token_id
    # A generation_config.json without eos_token_id: transformers does not fall back to config.json's.
    (directory / "generation_config.json").write_text(json.dumps({"bos_token_id": 1}))
    without = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).generation_config.eos_token_id
    (directory / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": [2, 7]}, indent=2))
    goldens["generation_eos"] = {"config_eos": 2, "generation_config_eos": [2, 7], "generate_eos": eos,
                                 "generate_eos_when_generation_config_has_none": without}
    (directory / "model.safetensors").unlink()   # the test puts tiny-llama's weights beside the two configs
    print(f"generation-eos: model.generation_config.eos_token_id = {eos}")

    # 5. A repeated key: Python's json keeps the last value.
    line = '{"input_ids": [5, 6, 7, 8], "labels": [5, 6, 7, 8], "labels": [-100, -100, 7, 8]}'
    goldens["duplicate_key_line"] = {"line": line, "parsed": json.loads(line)}

    (OUT / "goldens.json").write_text(json.dumps(goldens, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
