#!/usr/bin/env python3
"""Writes the fixtures of Tests/ModelIOTests/Fixtures/ with transformers (the reference model code).

Run with the project venv:  /opt/venv/bin/python tools/generate_model_fixtures.py

Outputs (≈1 MB in total):
  tiny-llama/   config.json + model.safetensors (transformers save_pretrained, F32) of a random
                LlamaForCausalLM (2 layers, d 32, GQA 4/2, vocab 128, tied embeddings);
                tiny-llama.gguf: the same weights as llama.cpp's convert_hf_to_gguf.py writes them (GGUF
                names, q/k rows permuted with LlamaModel.permute, F32), checked here to load back in
                transformers to the very same tensors;
                goldens.json: one packed-free example (input_ids, labels with -100), its logits (T × V),
                loss; gradients.safetensors: d(loss)/d(every parameter).
  tiny-llama-bf16/  the tiny Llama saved in BF16 by transformers, with logits of the BF16 weights (in F32).
  tiny-qwen2/   the same for a random Qwen2ForCausalLM (q/k/v biases, untied lm_head); its GGUF is not
                permuted (llama.cpp's Qwen2Model does not derive from LlamaModel).
  config-variants.json: ~40 config.json variants (RoPE key precedence, per-model-type defaults, biases,
                sliding window, RoPE scaling types) and what transformers builds from each: head_dim, kv heads,
                eps, tying, biases, per-layer sliding window, rotary inv_freq and attention scaling (after a
                forward of each listed length, for dynamic); `ours_error` names the key zero-sft refuses.
  rope-llama3/, rope-linear/, rope-dynamic/, rope-yarn/, mistral-window/: config.json (tiny-llama's shapes with
                a scaled RoPE, or mistral with sliding_window 8), goldens.json (40 ids, labels, loss) and
                reference.safetensors (logits, every gradient; rope-dynamic and mistral-window also the
                logits of cached one-token-at-a-time decoding after a 20-token prompt). The weights are
                tiny-llama/model.safetensors (the tests link it in). `--only-config` writes just these.
  smollm2/goldens.json (needs models/SmolLM2-135M-Instruct.Q4_1.gguf; run launch/fetch-smollm2):
                transformers loads the GGUF (dequantised to F32, permutation reversed); for a ChatML
                prompt: logits at every position for 256 fixed vocabulary ids, each position's top-5 and
                max |logit|; exact checksums of a few dequantised HF tensors; the masked loss of a 2-turn
                conversation with assistant-only labels; greedy continuation of "What is the capital of
                France?" (16 tokens).

Tolerances the Swift tests use: tiny models, logits and loss to 1e-4 relative to the largest |value|,
gradients 1e-4 relative to each tensor's largest |gradient|; SmolLM2 logits to 1e-3 of the logit scale.

Export check: `swift test --filter ModelIOTests` leaves our exports of the tiny GGUFs at
$TMPDIR/zero-sft-modelio/export-check/<name>/ with our logits in ours.json; this script (or
--check-export DIR for any `zero-sft export` output, e.g. of SmolLM2) loads them with safetensors and
transformers (model and tokenizer) and prints whether they match.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import gguf
from safetensors import safe_open
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "Tests" / "ModelIOTests" / "Fixtures"
MODEL = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
EXPORT_CHECK = Path(os.environ.get("TMPDIR", tempfile.gettempdir())) / "zero-sft-modelio" / "export-check"

torch.manual_seed(1234)
torch.use_deterministic_algorithms(True)


def checksum(values: np.ndarray) -> int:
    """sum over i of bits(value[i]) * (2i + 1) mod 2^64 (as SmolLM2GGUFTests computes it)."""
    bits = values.astype(np.float32).reshape(-1).view(np.uint32).astype(np.uint64)
    weights = (2 * np.arange(bits.size, dtype=np.uint64) + 1)
    with np.errstate(over="ignore"):
        return int(np.sum(bits * weights, dtype=np.uint64))


def byte_level_tokens(count: int) -> list[str]:
    """Three ChatML specials, then the first byte-level alphabet characters (a tiny valid vocabulary)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    alphabet = [chr(c) for c in cs]
    return ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + alphabet[: count - 3]


def llama_permute(weights: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """convert_hf_to_gguf.py LlamaModel.permute."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


GGUF_NAMES = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def gguf_name(hf: str) -> str:
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    if hf == "lm_head.weight":
        return "output.weight"
    parts = hf.split(".")
    layer, module, kind = parts[2], ".".join(parts[3:-1]), parts[-1]
    return f"blk.{layer}.{GGUF_NAMES[module]}.{kind}"


def write_gguf(model, arch: str, path: Path) -> None:
    """The model as convert_hf_to_gguf.py would write it (F32 tensors)."""
    c = model.config
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(path.stem)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_rope_freq_base(c.rope_theta if hasattr(c, "rope_theta") else c.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(byte_level_tokens(c.vocab_size))
    writer.add_token_types([3, 3, 3] + [1] * (c.vocab_size - 3))
    writer.add_token_merges([])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_chat_template("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}")
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and c.tie_word_embeddings:
            continue
        data = tensor.detach().float().numpy().copy()
        if arch == "llama" and ".q_proj." in name:
            data = llama_permute(data, c.num_attention_heads, c.num_attention_heads)
        if arch == "llama" and ".k_proj." in name:
            data = llama_permute(data, c.num_attention_heads, c.num_key_value_heads)
        writer.add_tensor(gguf_name(name), np.ascontiguousarray(data))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def randomise(model) -> None:
    """Weights large enough that every path matters (the default init gives near-uniform logits)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.3 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * (1.2 / p.shape[-1] ** 0.5))


def tiny_model(kind: str):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
    common = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  bos_token_id=1, eos_token_id=2)
    if kind == "llama":
        config = LlamaConfig(**common, rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True)
        model = LlamaForCausalLM(config)
    else:
        config = Qwen2Config(**common, rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=False)
        model = Qwen2ForCausalLM(config)
    randomise(model)
    return model.float().eval()


def tiny_fixture(kind: str) -> None:
    from transformers import AutoModelForCausalLM
    name = f"tiny-{kind}"
    out = FIXTURES / name
    out.mkdir(parents=True, exist_ok=True)
    model = tiny_model(kind)
    model.save_pretrained(out, safe_serialization=True)
    for extra in ["generation_config.json"]:
        (out / extra).unlink(missing_ok=True)
    write_gguf(model, "llama" if kind == "llama" else "qwen2", out / f"{name}.gguf")

    # The GGUF loads back in transformers to exactly the original tensors (so it follows llama.cpp's layout).
    reloaded = AutoModelForCausalLM.from_pretrained(out, gguf_file=f"{name}.gguf", dtype=torch.float32)
    original = model.state_dict()
    for key, value in reloaded.state_dict().items():
        assert torch.equal(value, original[key]), f"{name}.gguf: {key} differs after transformers' GGUF load"

    generator = torch.Generator().manual_seed(7 if kind == "llama" else 8)
    ids = torch.randint(3, 128, (1, 24), generator=generator)
    labels = ids.clone()
    labels[0, :9] = -100
    labels[0, 15:17] = -100
    model.zero_grad()
    output = model(input_ids=ids, labels=labels)
    output.loss.backward()
    gradients = {k: p.grad.detach().contiguous() for k, p in model.named_parameters()}
    if model.config.tie_word_embeddings:
        gradients.pop("lm_head.weight", None)
    save_file(gradients, str(out / "gradients.safetensors"), metadata={"format": "pt"})
    goldens = {
        "input_ids": ids[0].tolist(), "labels": labels[0].tolist(),
        "loss": output.loss.item(), "supervised": int((labels[0, 1:] != -100).sum()),
        "logits": output.logits[0].detach().reshape(-1).tolist(),
        "vocab_size": model.config.vocab_size,
    }
    (out / "goldens.json").write_text(json.dumps(goldens))
    if kind == "llama":
        bf16_fixture(model, ids)
    print(f"{name}: loss {output.loss.item():.6f}, {sum(p.numel() for p in model.parameters())} parameters, "
          f"max |logit| {output.logits.abs().max().item():.3f}")


def bf16_fixture(model, ids) -> None:
    """The tiny Llama saved in BF16 (an HF directory as most hub checkpoints are), with the logits of
    the BF16 weights computed in F32."""
    import copy
    out = FIXTURES / "tiny-llama-bf16"
    out.mkdir(parents=True, exist_ok=True)
    half = copy.deepcopy(model).to(torch.bfloat16)
    half.save_pretrained(out, safe_serialization=True)
    (out / "generation_config.json").unlink(missing_ok=True)
    from transformers import AutoModelForCausalLM
    # Loaded as a user would (F32 compute); `half.float()` would keep a BF16-rounded rotary inv_freq buffer.
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = reloaded(input_ids=ids).logits[0]
    (out / "goldens.json").write_text(json.dumps({"input_ids": ids[0].tolist(), "logits": logits.reshape(-1).tolist()}))



# ---- Config keys and RoPE / sliding-window variants (issue 12 kinds 2 and 8) ----

TINY = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2)


def config_variants() -> list[dict]:
    """config.json variants, each read by transformers; `ours_error` names the key zero-sft refuses."""
    v = []

    def add(name, config, ours_error=None, lengths=(None,)):
        v.append(dict(name=name, config=config, ours_error=ours_error, lengths=list(lengths)))

    llama = dict(model_type="llama", **TINY)
    add("llama-defaults", dict(llama))
    add("llama-nested-theta-wins", dict(llama, rope_theta=10000.0, rope_parameters={"rope_type": "default", "rope_theta": 500000.0}))
    add("llama-top-theta-only", dict(llama, rope_theta=123456.0))
    add("llama-rope-scaling-over-parameters", dict(llama, rope_theta=20000.0, rope_scaling={"type": "linear", "factor": 2.0},
                                                   rope_parameters={"rope_type": "default", "rope_theta": 100000.0}))
    add("llama-empty-rope-scaling", dict(llama, rope_scaling={}, rope_parameters={"rope_type": "default", "rope_theta": 30000.0}))
    add("llama-legacy-type", dict(llama, rope_theta=500000.0, rope_scaling={"type": "linear", "factor": 4.0}))
    add("llama-rope-type-over-type", dict(llama, max_position_embeddings=16, rope_scaling={"type": "linear", "rope_type": "dynamic", "factor": 2.0}),
        lengths=(None, 16, 40))
    add("llama3-1b-shape", dict(llama, hidden_size=128, num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=131072,
                                rope_scaling={"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                              "original_max_position_embeddings": 8192, "rope_type": "llama3"}, rope_theta=500000.0))
    add("llama3-original-default", dict(llama, hidden_size=128, num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                                        rope_parameters={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                         "high_freq_factor": 4.0, "rope_theta": 10000.0}))
    add("llama3-original-top-level", dict(llama, hidden_size=128, num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                                          original_max_position_embeddings=1024,
                                          rope_parameters={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                           "high_freq_factor": 4.0, "rope_theta": 10000.0,
                                                           "original_max_position_embeddings": 2048}))
    yarn = dict(llama, hidden_size=128, num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=8192)
    add("yarn", dict(yarn, rope_parameters={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 2048, "rope_theta": 10000.0}))
    add("yarn-betas-no-truncate", dict(yarn, rope_parameters={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 2048,
                                                              "beta_fast": 16.0, "beta_slow": 2.0, "truncate": False, "rope_theta": 10000.0}))
    add("yarn-attention-factor", dict(yarn, rope_parameters={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 2048,
                                                             "attention_factor": 0.8, "rope_theta": 10000.0}))
    add("yarn-mscale", dict(yarn, rope_parameters={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 2048,
                                                   "mscale": 0.707, "mscale_all_dim": 1.0, "rope_theta": 10000.0}))
    add("yarn-no-factor", dict(yarn, rope_parameters={"rope_type": "yarn", "original_max_position_embeddings": 2048, "rope_theta": 10000.0}),
        ours_error="factor")
    add("linear", dict(llama, rope_parameters={"rope_type": "linear", "factor": 3.0, "rope_theta": 10000.0}))
    add("dynamic", dict(llama, hidden_size=128, num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                        rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}), lengths=(None, 64, 65, 100, 1000))
    add("llama-head-dim", dict(llama, head_dim=16))
    add("llama-head-dim-null", dict(llama, head_dim=None))
    add("llama-kv-null", dict(llama, num_key_value_heads=None))
    add("llama-no-kv", {k: x for k, x in llama.items() if k != "num_key_value_heads"})
    add("llama-eps-tie", dict(llama, rms_norm_eps=1e-5, tie_word_embeddings=True, max_position_embeddings=777))
    add("llama-ignores-sliding", dict(llama, use_sliding_window=True, sliding_window=4))
    add("llama-attention-bias", dict(llama, attention_bias=True), ours_error="attention_bias")
    add("llama-mlp-bias", dict(llama, mlp_bias=True), ours_error="mlp_bias")
    add("longrope", dict(llama, rope_parameters={"rope_type": "longrope", "factor": 2.0, "short_factor": [1.0] * 4,
                                                 "long_factor": [2.0] * 4, "original_max_position_embeddings": 128}), ours_error="rope_type")
    add("partial-rotary", dict(llama, partial_rotary_factor=0.5), ours_error="partial_rotary_factor")
    qwen2 = dict(model_type="qwen2", **TINY)
    add("qwen2-defaults", {k: x for k, x in dict(qwen2, num_attention_heads=32, hidden_size=64).items() if k != "num_key_value_heads"})
    add("qwen2-bias-keys-ignored", dict(qwen2, attention_bias=False, mlp_bias=True, tie_word_embeddings=True))
    add("qwen2-window-off", dict(qwen2, use_sliding_window=False, sliding_window=8, max_window_layers=0))
    add("qwen2-window-all", dict(qwen2, use_sliding_window=True, sliding_window=8, max_window_layers=0))
    add("qwen2-window-default-size", dict(qwen2, use_sliding_window=True, max_window_layers=0))
    add("qwen2-window-none-above", dict(qwen2, use_sliding_window=True, sliding_window=8, max_window_layers=2))
    add("qwen2-window-mixed", dict(qwen2, use_sliding_window=True, sliding_window=8, max_window_layers=1), ours_error="max_window_layers")
    add("qwen2-layer-types", dict(qwen2, use_sliding_window=True, sliding_window=8, layer_types=["sliding_attention"] * 2))
    mistral = dict(model_type="mistral", **TINY)
    add("mistral-defaults", {k: x for k, x in dict(mistral, num_attention_heads=8).items() if k != "num_key_value_heads"})
    add("mistral-window-null", dict(mistral, sliding_window=None))
    add("mistral-window", dict(mistral, sliding_window=8, attention_bias=True, head_dim=16))
    return v


def resolve_with_transformers(config: dict, lengths: list) -> dict:
    """What transformers builds from `config` (a config.json): sizes, biases, tying, RoPE inv_freq and the window."""
    from transformers import AutoConfig, AutoModelForCausalLM
    with tempfile.TemporaryDirectory() as directory:
        (Path(directory) / "config.json").write_text(json.dumps(config))
        try:
            hf = AutoConfig.from_pretrained(directory)
            model = AutoModelForCausalLM.from_config(hf).float().eval()
        except Exception as error:  # noqa: BLE001
            return {"error": f"{type(error).__name__}: {error}"}
    attention = model.model.layers[0].self_attn
    rotary = model.model.rotary_emb
    windows = []
    for i, layer in enumerate(model.model.layers):
        w = getattr(layer.self_attn, "sliding_window", None)
        if config["model_type"] == "mistral":
            w = getattr(hf, "sliding_window", None)
        windows.append(w)
    frequencies = []
    for length in lengths:
        if length is not None:
            x = torch.zeros(1, length, attention.head_dim)
            with torch.no_grad():
                rotary(x, torch.arange(length)[None])
        frequencies.append({"length": length, "inv_freq": rotary.inv_freq.tolist(), "attention_scaling": float(rotary.attention_scaling)})
    return {
        "head_dim": attention.head_dim, "num_key_value_heads": hf.num_key_value_heads,
        "rms_norm_eps": model.model.norm.variance_epsilon, "max_position_embeddings": hf.max_position_embeddings,
        "tie_word_embeddings": model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(),
        "qkv_bias": attention.q_proj.bias is not None, "o_bias": attention.o_proj.bias is not None,
        "mlp_bias": model.model.layers[0].mlp.gate_proj.bias is not None,
        "sliding_windows": windows, "frequencies": frequencies,
    }


def config_fixture() -> None:
    out = FIXTURES / "config-variants.json"
    variants = config_variants()
    for variant in variants:
        variant["transformers"] = resolve_with_transformers(variant["config"], variant["lengths"])
        t = variant["transformers"]
        print(f"  {variant['name']}: " + (t["error"][:80] if "error" in t else
              f"head_dim {t['head_dim']}, kv {t['num_key_value_heads']}, windows {t['sliding_windows']}, "
              f"inv_freq[-1] {t['frequencies'][0]['inv_freq'][-1]:.4g}, m {t['frequencies'][0]['attention_scaling']:.4g}"))
    out.write_text(json.dumps(variants, indent=1))
    print(f"config-variants.json: {len(variants)} variants")


SCALED = {
    # name: (model_type, config overrides, sequence length)
    "rope-llama3": ("llama", {"max_position_embeddings": 256, "rope_parameters": {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 128, "rope_theta": 10000.0}}, 40),
    "rope-linear": ("llama", {"rope_parameters": {"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0}}, 40),
    "rope-dynamic": ("llama", {"max_position_embeddings": 16, "rope_parameters": {"rope_type": "dynamic", "factor": 2.0,
                                                                                   "rope_theta": 10000.0}}, 40),
    "rope-yarn": ("llama", {"max_position_embeddings": 64, "rope_parameters": {
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "beta_fast": 8.0, "beta_slow": 0.5,
        "rope_theta": 10000.0}}, 40),
    "mistral-window": ("mistral", {"sliding_window": 8, "max_position_embeddings": 256, "rope_theta": 10000.0}, 40),
}


def scaled_fixture(name: str) -> None:
    """A tiny model with the weights of tiny-llama/model.safetensors and a scaled RoPE or a sliding window:
    config.json, goldens.json (ids, labels, loss) and reference.safetensors (logits, every gradient).
    For rope-dynamic also the logits transformers' generate-style cached decoding gives for each token
    after a 20-token prompt (the frequencies grow with the cache)."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from safetensors.torch import load_file
    kind, overrides, length = SCALED[name]
    base = json.loads((FIXTURES / "tiny-llama" / "config.json").read_text())
    config = {k: x for k, x in base.items() if k not in ("architectures", "transformers_version", "dtype")}
    config.pop("rope_parameters", None)
    config.update(overrides)
    config["model_type"] = kind
    if kind == "mistral":
        for key in ("attention_bias", "mlp_bias", "pretraining_tp"):
            config.pop(key, None)
    out = FIXTURES / name
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(out)).float()
    state = load_file(str(FIXTURES / "tiny-llama" / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    model.tie_weights()
    model.eval()
    generator = torch.Generator().manual_seed(11)
    ids = torch.randint(3, 128, (1, length), generator=generator)
    labels = ids.clone()
    labels[0, :5] = -100
    labels[0, 20:23] = -100
    model.zero_grad()
    output = model(input_ids=ids, labels=labels)
    output.loss.backward()
    tensors = {k: p.grad.detach().contiguous() for k, p in model.named_parameters() if k != "lm_head.weight"}
    tensors["logits"] = output.logits[0].detach().contiguous()
    goldens = {"input_ids": ids[0].tolist(), "labels": labels[0].tolist(), "loss": output.loss.item(),
               "supervised": int((labels[0, 1:] != -100).sum())}
    if name in ("rope-dynamic", "mistral-window"):
        fresh = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(out)).float()
        fresh.load_state_dict(state, strict=False)
        fresh.tie_weights()
        fresh.eval()
        prompt = 20
        with torch.no_grad():
            step = fresh(input_ids=ids[:, :prompt], use_cache=True)
            cache, rows = step.past_key_values, [step.logits[0, -1]]
            for t in range(prompt, length):
                step = fresh(input_ids=ids[:, t:t + 1], past_key_values=cache, use_cache=True,
                             position_ids=torch.tensor([[t]]))
                cache = step.past_key_values
                rows.append(step.logits[0, -1])
        tensors["incremental_logits"] = torch.stack(rows).contiguous()
        goldens["incremental_prompt"] = prompt
    save_file(tensors, str(out / "reference.safetensors"), metadata={"format": "pt"})
    (out / "goldens.json").write_text(json.dumps(goldens))
    print(f"{name}: loss {output.loss.item():.6f}, max |logit| {output.logits.abs().max().item():.3f}")


def assistant_labels(tokenizer, messages) -> tuple[list[int], list[int]]:
    """ids of the conversation; labels on each assistant turn's content and its <|im_end|>, -100 elsewhere."""
    ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)
    labels = [-100] * len(ids)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(tokenizer.apply_chat_template(messages[:i], tokenize=True, add_generation_prompt=True, return_dict=False))
        end = len(tokenizer.apply_chat_template(messages[: i + 1], tokenize=True, return_dict=False)) - 1  # before the "\n"
        for t in range(start, end):
            labels[t] = ids[t]
    return ids, labels


def smollm2_fixture() -> None:
    if not MODEL.exists():
        print(f"skipping smollm2 goldens: {MODEL} is missing (run launch/fetch-smollm2)")
        return
    from transformers import AutoModelForCausalLM, AutoTokenizer
    directory, name = str(MODEL.parent), MODEL.name
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32).eval()
    out = FIXTURES / "smollm2"
    out.mkdir(parents=True, exist_ok=True)

    question = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(question, tokenize=True, add_generation_prompt=True, return_dict=False)
    with torch.no_grad():
        logits = model(torch.tensor([prompt])).logits[0]
        generated = model.generate(torch.tensor([prompt]), max_new_tokens=16, do_sample=False)[0, len(prompt):].tolist()
    rng = np.random.default_rng(99)
    sampled = sorted(rng.choice(model.config.vocab_size, size=256, replace=False).tolist())
    top = torch.topk(logits, 5, dim=-1)

    state = model.state_dict()
    weights = {}
    for key in ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                "model.layers.0.self_attn.k_proj.weight", "model.layers.29.self_attn.k_proj.weight",
                "model.layers.7.mlp.down_proj.weight", "model.layers.29.post_attention_layernorm.weight"]:
        values = state[key].float().numpy()
        weights[key] = {"shape": list(values.shape), "checksum": str(checksum(values)), "first": values.reshape(-1)[:16].tolist()}

    conversation = [
        {"role": "user", "content": "Name a primary colour."},
        {"role": "assistant", "content": "Blue is a primary colour."},
        {"role": "user", "content": "And another one?"},
        {"role": "assistant", "content": "Red."},
    ]
    ids, labels = assistant_labels(tokenizer, conversation)
    with torch.no_grad():
        loss = model(torch.tensor([ids]), labels=torch.tensor([labels])).loss.item()

    goldens = {
        "prompt_ids": prompt, "sampled_ids": sampled,
        "sampled_logits": logits[:, sampled].reshape(-1).tolist(),
        "top_ids": top.indices.tolist(), "top_logits": top.values.tolist(),
        "max_abs_logit": logits.abs().max().item(),
        "greedy_ids": generated, "greedy_text": tokenizer.decode(generated, skip_special_tokens=True),
        "weights": weights,
        "conversation_ids": ids, "conversation_labels": labels, "conversation_loss": loss,
        "conversation_supervised": sum(1 for x in labels[1:] if x != -100),
    }
    (out / "goldens.json").write_text(json.dumps(goldens))
    print(f"smollm2: {len(prompt)} prompt tokens, max |logit| {goldens['max_abs_logit']:.3f}, "
          f"greedy {goldens['greedy_text']!r}, 2-turn loss {loss:.6f} over {goldens['conversation_supervised']} tokens")


def check_export(directory: Path, reference: Path | None) -> bool:
    """Loads an exported directory with safetensors and transformers; compares with the source model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    ok = True
    with safe_open(str(directory / "model.safetensors"), framework="pt") as f:
        names = list(f.keys())
        dtypes = {f.get_slice(n).get_dtype() for n in names}
        print(f"{directory}: safetensors header readable: {len(names)} tensors, dtypes {sorted(dtypes)}, "
              f"metadata {f.metadata()}")
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    ours_path = directory / "ours.json"
    if ours_path.exists():
        ours = json.loads(ours_path.read_text())
        with torch.no_grad():
            logits = model(torch.tensor([ours["input_ids"]])).logits[0].reshape(-1).numpy()
        diff = float(np.max(np.abs(logits - np.array(ours["logits"], dtype=np.float32))))
        scale = float(np.max(np.abs(logits)))
        good = diff <= 1e-4 * max(scale, 1)
        ok &= good
        print(f"  transformers logits vs ours: max |diff| {diff:.3g} (scale {scale:.3g}): {'OK' if good else 'MISMATCH'}")
    exported_tokenizer = AutoTokenizer.from_pretrained(directory)
    print(f"  transformers loads the exported tokenizer: {type(exported_tokenizer).__name__}, "
          f"{len(exported_tokenizer)} tokens, eos {exported_tokenizer.eos_token!r}")
    if reference is not None:
        ref = AutoModelForCausalLM.from_pretrained(reference.parent, gguf_file=reference.name, dtype=torch.float32).eval()
        ids = torch.tensor([[1, 9690, 198, 2683, 314, 253, 5356, 30, 2]])
        ids = ids.clamp(max=model.config.vocab_size - 1)
        with torch.no_grad():
            diff = (model(ids).logits - ref(ids).logits).abs().max().item()
        good = diff == 0.0
        ok &= good
        print(f"  exported vs transformers' own GGUF load: max |logit diff| {diff:.3g}: {'OK' if good else 'MISMATCH'}")
        try:
            theirs = AutoTokenizer.from_pretrained(reference.parent, gguf_file=reference.name)
        except Exception as error:  # tiny fixtures have no merges; transformers may refuse them
            theirs = None
            print(f"  (transformers cannot build a tokenizer from {reference.name}: {error})")
        if theirs is not None:
            exported = AutoTokenizer.from_pretrained(directory)
            texts = ["What is the capital of France?", "  spaces\tand tabs\n", "café 東京 🙂 123456", "<|im_start|>user\nhi<|im_end|>"]
            same = all(exported.encode(t, add_special_tokens=False) == theirs.encode(t, add_special_tokens=False) for t in texts)
            ok &= same
            template = exported.chat_template is not None
            print(f"  exported tokenizer vs transformers' GGUF tokenizer on {len(texts)} texts: {'same ids' if same else 'DIFFERENT'}; "
                  f"chat template {'present' if template else 'missing'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check-export", type=Path, help="check an exported directory instead of writing fixtures")
    parser.add_argument("--reference-gguf", type=Path, help="with --check-export: the GGUF it was exported from")
    parser.add_argument("--only-config", action="store_true",
                        help="write only config-variants.json and the rope-*/mistral-window fixtures (leave the others as they are)")
    args = parser.parse_args()
    if args.check_export:
        return 0 if check_export(args.check_export, args.reference_gguf) else 1
    config_fixture()
    for name in SCALED:
        scaled_fixture(name)
    if args.only_config:
        return 0
    tiny_fixture("llama")
    tiny_fixture("qwen2")
    smollm2_fixture()
    ok = True
    for name in ["tiny-llama", "tiny-qwen2"]:
        exported = EXPORT_CHECK / name
        if exported.exists():
            ok &= check_export(exported, FIXTURES / name / f"{name}.gguf")
        else:
            print(f"(no export check for {name}: run `swift test -c release --filter ModelIOTests` first)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
