#!/usr/bin/env python3
"""Writes Tests/TrainingTests/Fixtures/smollm2-gradnorm/: the first-step gradient norm of SmolLM2-135M
on ten short chats, computed by transformers in fp32 (the reference for issue 12's precise reductions).

Run with the project venv (needs models/SmolLM2-135M-Instruct.Q4_1.gguf: launch/fetch-smollm2, and a
release build of zero-sft):

    /work/venv/bin/python tools/generate_gradnorm_golden.py [--hf-dir DIR]

1. `zero-sft export --model models/SmolLM2-135M-Instruct.Q4_1.gguf --out DIR` (unless --hf-dir names an
   existing export): the GGUF dequantised to an HF fp32 directory, the very weights zero-sft trains.
2. data.jsonl: ten ChatML chats (questions and answers written here), tokenized with the exported
   tokenizer.json; labels are -100 on the prompt (through "<|im_start|>assistant\\n") and the ids on
   the answer and its "<|im_end|>". Together they are at most 512 tokens: one packed row.
3. golden.json: transformers' LlamaForCausalLM in fp32 on each chat separately (as zero-sft's packed
   row attends within each example only and restarts positions), the loss as zero-sft normalises it
   — the summed NLL of every supervised shifted label (HF: logits[t] predicts labels[t + 1], per
   example) divided by the number of supervised labels of the whole step — then backward; the norm
   is sqrt(sum of squares of every fp32 gradient, summed in float64). The tied embedding counts
   once. Also the loss. With --float64 (run after the fp32 run) the same in float64 is added: torch's
   own fp32 figures are about 8e-6 from it, which is the scale of fp32 rounding through 30 layers.
   With --bf16-parameters (after that) the float64 computation runs on every parameter rounded to
   bf16 first (`tensor.to(torch.bfloat16)`, ties to even): what `train --param-dtype bf16` (FSDP's
   param_dtype) reads; added under "bf16_parameters_float64".
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "Tests" / "TrainingTests" / "Fixtures" / "smollm2-gradnorm"
MODEL = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"

CHATS = [
    ("What is the capital of France?", "Paris."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What is 12 + 30?", "42."),
    ("Who wrote Hamlet?", "William Shakespeare wrote Hamlet."),
    ("What colour is the sky on a clear day?", "Blue."),
    ("Name a prime number.", "Seven is a prime number."),
    ("What do bees make?", "Bees make honey."),
    ("How many days are in a week?", "There are seven days in a week."),
    ("What is water made of?", "Hydrogen and oxygen."),
    ("Say hello.", "Hello! How can I help you today?"),
]


def export(hf_dir: Path) -> None:
    binary = REPO / ".build" / "release" / "zero-sft"
    subprocess.run([str(binary), "export", "--model", str(MODEL), "--out", str(hf_dir)], check=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hf-dir", type=Path, help="an existing `zero-sft export` of the SmolLM2 GGUF")
    parser.add_argument("--float64", action="store_true",
                        help="compute in float64 and add the figures to the existing golden.json under "
                             "\"float64\" (how far fp32 rounding moves torch's own figures)")
    parser.add_argument("--bf16-parameters", action="store_true",
                        help="with --float64: round every parameter to bf16 first and add the figures under "
                             "\"bf16_parameters_float64\" (the reference of --param-dtype bf16)")
    args = parser.parse_args()
    hf_dir = args.hf_dir
    if hf_dir is None or not (hf_dir / "model.safetensors").exists():
        hf_dir = hf_dir or Path(tempfile.mkdtemp()) / "smollm2-hf"
        export(hf_dir)

    tokenizer = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    examples = []
    for question, answer in CHATS:
        prompt = f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
        reply = f"{answer}<|im_end|>"
        prompt_ids = tokenizer.encode(prompt, add_special_tokens=False).ids
        reply_ids = tokenizer.encode(reply, add_special_tokens=False).ids
        ids = prompt_ids + reply_ids
        labels = [-100] * len(prompt_ids) + reply_ids
        examples.append((ids, labels))
    total = sum(len(ids) for ids, _ in examples)
    assert total <= 512, f"{total} tokens: the chats must fit one row of 512"

    torch.manual_seed(0)
    dtype = torch.float64 if args.float64 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=dtype)
    model.train(False)  # no dropout (there is none in Llama, but be explicit); gradients still flow
    if args.bf16_parameters:
        assert args.float64, "--bf16-parameters computes in float64: pass --float64 too"
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.copy_(parameter.float().to(torch.bfloat16).to(dtype))
    supervised = sum(sum(1 for label in labels[1:] if label != -100) for _, labels in examples)
    loss_sum = torch.zeros((), dtype=torch.float64)
    for ids, labels in examples:
        input_ids = torch.tensor([ids])
        targets = torch.tensor(labels[1:])
        logits = model(input_ids=input_ids).logits[0, :-1]
        nll = torch.nn.functional.cross_entropy(logits, targets, ignore_index=-100, reduction="sum")
        (nll / supervised).backward()
        loss_sum += nll.detach().double()
    squares = torch.zeros((), dtype=torch.float64)
    for parameter in model.parameters():  # tied weights appear once
        squares += parameter.grad.double().pow(2).sum()
    norm = squares.sqrt().item()
    loss = (loss_sum / supervised).item()

    if args.float64:
        golden = json.loads((OUT / "golden.json").read_text())
        golden["bf16_parameters_float64" if args.bf16_parameters else "float64"] = {"loss": loss, "grad_norm": norm}
        (OUT / "golden.json").write_text(json.dumps(golden, indent=2) + "\n")
        print(json.dumps(golden, indent=2))
        return
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / "data.jsonl", "w") as f:
        for ids, labels in examples:
            f.write(json.dumps({"input_ids": ids, "labels": labels}) + "\n")
    golden = {
        "model": "models/SmolLM2-135M-Instruct.Q4_1.gguf",
        "tokens": total,
        "supervised": supervised,
        "loss": loss,
        "grad_norm": norm,
        "torch": torch.__version__,
    }
    with open(OUT / "golden.json", "w") as f:
        json.dump(golden, f, indent=2)
        f.write("\n")
    print(json.dumps(golden, indent=2))


if __name__ == "__main__":
    sys.exit(main())
