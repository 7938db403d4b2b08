#!/usr/bin/env python3
"""Checks `--long-examples split` against transformers: every piece must equal
`apply_chat_template(system + messages[c:e], tokenize=True)` for some run of messages of its record.

    zero-sft inspect-data --model M --data D --seq-len L --long-examples split --jsonl > pieces.jsonl
    python tools/check_split_pieces.py D pieces.jsonl L TOKENIZER_JSON TOKENIZER_CONFIG_JSON

(SmolLM2: Tests/TokenizersTests/Fixtures/smollm2/tokenizer.json and
Tests/ChatDataTests/Fixtures/smollm2/tokenizer_config.json.) Pieces cut at L (a turn longer than L)
are counted apart. Measured on the first 25 chitchat conversations: at 256, 146 pieces, all equal; at 128,
331 pieces, 328 equal and 3 cut at 128 (answers longer than 128 tokens with the system prompt).
"""
import json
import sys

from transformers import PreTrainedTokenizerFast

data, pieces_path, limit, tokenizer_json, config_json = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
tokenizer = PreTrainedTokenizerFast(tokenizer_file=tokenizer_json)
tokenizer.chat_template = json.load(open(config_json))["chat_template"]

candidates = set()
for line in open(data):
    if not line.strip():
        continue
    messages = json.loads(line)["messages"]
    system = [m for m in messages[:1] if m["role"] == "system"]
    rest = messages[len(system):]
    for start in range(len(rest)):
        for end in range(start + 1, len(rest) + 1):
            ids = tokenizer.apply_chat_template(system + rest[start:end], tokenize=True)
            ids = ids["input_ids"] if hasattr(ids, "keys") else ids
            candidates.add(tuple(ids))
            if len(ids) > limit and end < len(rest):
                break  # longer runs from this start cannot be pieces

pieces = [json.loads(line)["input_ids"] for line in open(pieces_path) if line.strip()]
equal = sum(tuple(p) in candidates for p in pieces)
cut = sum(tuple(p) not in candidates and len(p) == limit for p in pieces)
print(f"{len(pieces)} pieces: {equal} equal to apply_chat_template(system + messages[c:e]), {cut} cut at {limit}, "
      f"{len(pieces) - equal - cut} neither")
sys.exit(0 if equal + cut == len(pieces) else 1)
