#!/usr/bin/env python3
"""Generate the chat-template and chat-data goldens for Tests/ChatDataTests/Fixtures.

Run with the project venv (transformers, tokenizers, jinja2, gguf):

    /opt/venv/bin/python tools/generate_chat_fixtures.py [--gguf models/SmolLM2-135M-Instruct.Q4_1.gguf]

The reference is HF transformers' `apply_chat_template`:

- SmolLM2's template is read from the real GGUF (`tokenizer.chat_template`); Qwen2-Instruct's and
  Meta-Llama-3-Instruct's are written out below, verbatim from their `tokenizer_config.json`.
- Assistant masks come from transformers' `return_assistant_tokens_mask=True`, using a copy of each
  template with `{% generation %}` around every assistant turn's content and end-of-turn token. The
  script first checks that the annotated copy renders exactly the same text as the original for every
  conversation, so the mask belongs to the real template's rendering.
- The "last assistant turn only" masks, the prompt/completion ("plain") renderings and every mask are
  also computed from character spans mapped to tokens with the tokenizer's offsets, and the script
  checks that this span computation agrees with transformers' mask wherever both exist.

What it writes:

- `smollm2/tokenizer_config.json`: SmolLM2's config with the GGUF's chat template (the tokenizer.json
  is the one in Tests/TokenizersTests/Fixtures/smollm2, not copied again);
- `qwen2-chat/`, `llama3-chat/`: HF tokenizer directories (the small synthetic Qwen2 / Llama-3 BPEs of
  the tokenizer fixtures, with their special tokens) plus a tokenizer_config.json carrying the chat template;
- `goldens.json`: for each template and conversation, the rendered text, input ids, the assistant mask,
  the last-turn mask, and the generation prompt (text and ids); plain prompt/completion cases;
- `data/`: small data files in every supported format and `data/expected.json`, the examples each file
  gives with SmolLM2's template under every `--train-on` option.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import transformers
from transformers import AutoTokenizer

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "Tests" / "ChatDataTests" / "Fixtures"
TOKENIZER_FIXTURES = ROOT / "Tests" / "TokenizersTests" / "Fixtures"

# Qwen2-Instruct (e.g. Qwen/Qwen2-0.5B-Instruct tokenizer_config.json).
QWEN2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Meta-Llama-3-8B-Instruct tokenizer_config.json.
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def annotated_chatml(default_system: str) -> str:
    """ChatML with a default system prompt, with {% generation %} around each assistant content + <|im_end|>."""
    return (
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\n" + default_system + "<|im_end|>\n' }}{% endif %}"
        "{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}"
        "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
        "{% else %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )


ANNOTATED_LLAMA3 = (
    "{% for message in messages %}{% if loop.index0 == 0 %}{{ bos_token }}{% endif %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] | trim + '<|eot_id|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] | trim + '<|eot_id|>' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

CONVERSATIONS: list[list[dict]] = [
    [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "The capital of France is Paris."},
    ],
    [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Name three primes."},
        {"role": "assistant", "content": "2, 3 and 5."},
    ],
    [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Write a haiku about rain."},
        {"role": "assistant", "content": "Soft rain on the roof\nwhispers to the sleeping town\npuddles hold the sky"},
    ],
    [
        {"role": "system", "content": "  Be brief.\n"},
        {"role": "user", "content": "\tTabs\tand  spaces  \n\n"},
        {"role": "assistant", "content": "  Leading spaces, trailing newline\n\n"},
        {"role": "user", "content": "ok"},
        {"role": "assistant", "content": "\nDone."},
    ],
    [
        {"role": "user", "content": "Traduis « bonjour » en japonais 🇯🇵"},
        {"role": "assistant", "content": "こんにちは (konnichiwa) — 😊"},
    ],
    [
        {"role": "user", "content": "Sum 12345678 and 98765432 in Python."},
        {"role": "assistant", "content": "```python\nprint(12345678 + 98765432)  # 111111110\n```"},
    ],
    [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "system", "content": "Now answer in French."},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "d"},
    ],
    [
        {"role": "user", "content": "Tell me a joke."},
    ],
    [  # decomposed accents: Qwen2's NFC normalizer rewrites them, so token texts no longer add up to the input
        {"role": "user", "content": "Cafe\u0301 or the\u0301?"},
        {"role": "assistant", "content": "Cafe\u0301, s'il vous plai\u0302t."},
    ],
]

PLAIN_CASES = [
    ("The capital of France is", " Paris."),
    ("def add(a, b):\n", "    return a + b\n"),
    ("Translate to German: cat\n", "Katze"),
]

# Data files in every format (SmolLM2 template), with the expected examples.
MESSAGES_JSONL = [
    {"messages": CONVERSATIONS[0]},
    {"messages": CONVERSATIONS[2]},
    {"messages": CONVERSATIONS[1], "id": "extra keys are ignored"},
]
PROMPT_COMPLETION_JSONL = [
    {"prompt": "What is 2 + 2?", "completion": "2 + 2 = 4."},
    {"prompt": [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Colour of the sky?"}],
     "completion": [{"role": "assistant", "content": "Blue."}]},
]
ALPACA = [
    {"instruction": "Give a synonym of happy.", "input": "", "output": "Joyful."},
    {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
    {"instruction": "Reverse the word.", "input": "stressed", "output": "desserts", "system": "You reverse words."},
]


def alpaca_messages(record: dict) -> list[dict]:
    user = record["instruction"]
    if record.get("input"):
        user = user + "\n" + record["input"]
    messages = [{"role": "system", "content": record["system"]}] if record.get("system") else []
    return messages + [{"role": "user", "content": user}, {"role": "assistant", "content": record["output"]}]


def prompt_completion_messages(record: dict) -> list[dict]:
    prompt, completion = record["prompt"], record["completion"]
    prompt = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    completion = [{"role": "assistant", "content": completion}] if isinstance(completion, str) else completion
    return prompt + completion


def python_strip(text: str) -> str:
    return text.strip()


def spans(style: str, messages: list[dict], default_system: str | None, bos: str) -> tuple[str, list[tuple[int, int, int]]]:
    """The rendering and the character span of each assistant turn (content + end of turn), by turn index."""
    text = ""
    turns: list[tuple[int, int, int]] = []
    for index, message in enumerate(messages):
        if style == "chatml":
            if index == 0 and message["role"] != "system" and default_system is not None:
                text += "<|im_start|>system\n" + default_system + "<|im_end|>\n"
            text += "<|im_start|>" + message["role"] + "\n"
            start = len(text)
            text += message["content"] + "<|im_end|>"
            if message["role"] == "assistant":
                turns.append((index, start, len(text)))
            text += "\n"
        elif style == "llama3":
            if index == 0:
                text += bos
            text += "<|start_header_id|>" + message["role"] + "<|end_header_id|>\n\n"
            start = len(text)
            text += python_strip(message["content"]) + "<|eot_id|>"
            if message["role"] == "assistant":
                turns.append((index, start, len(text)))
        else:
            raise ValueError(style)
    return text, turns


def mask_from_spans(tokenizer, text: str, char_spans: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """Token ids of `text` and a 0/1 mask: 1 for a token that overlaps a span (as transformers' char_to_token does)."""
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = encoding["input_ids"]
    mask = [0] * len(ids)
    for start, end in char_spans:
        if start == end:
            continue
        first = encoding.char_to_token(start)
        last = encoding.char_to_token(end - 1)
        for position in range(first, last + 1):
            mask[position] = 1
    return ids, mask


def load_tokenizer(directory: Path, tokenizer_json: Path | None = None):
    if tokenizer_json is None:
        return AutoTokenizer.from_pretrained(str(directory))
    with tempfile.TemporaryDirectory() as scratch:
        shutil.copy(tokenizer_json, Path(scratch) / "tokenizer.json")
        shutil.copy(directory / "tokenizer_config.json", Path(scratch) / "tokenizer_config.json")
        return AutoTokenizer.from_pretrained(scratch)


def template_cases(name: str, tokenizer, template: str, annotated: str, style: str, default_system: str | None) -> list[dict]:
    cases = []
    bos = tokenizer.bos_token or ""
    for messages in CONVERSATIONS:
        rendered = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False)
        rendered_annotated = tokenizer.apply_chat_template(messages, chat_template=annotated, tokenize=False)
        assert rendered == rendered_annotated, f"{name}: annotated template renders differently:\n{rendered!r}\n{rendered_annotated!r}"
        text, turns = spans(style, messages, default_system, bos)
        assert text == rendered, f"{name}: span rendering differs:\n{text!r}\n{rendered!r}"

        result = tokenizer.apply_chat_template(
            messages, chat_template=annotated, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        ids = list(result["input_ids"])
        assert ids == list(tokenizer(rendered, add_special_tokens=False)["input_ids"])
        hf_mask = list(result["assistant_masks"])
        span_ids, span_mask = mask_from_spans(tokenizer, text, [(s, e) for _, s, e in turns])
        assert span_ids == ids and span_mask == hf_mask, f"{name}: span mask differs from transformers' mask"
        _, last_mask = mask_from_spans(tokenizer, text, [(s, e) for _, s, e in turns[-1:]])

        prompt_messages = messages[:-1] if messages[-1]["role"] == "assistant" else messages
        prompt_text = tokenizer.apply_chat_template(prompt_messages, chat_template=template, tokenize=False, add_generation_prompt=True)
        prompt_ids = list(tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
        # Usually a prefix of the training ids; not always (Qwen2's regex joins "\n" + "\nDone" into one "\n\n").
        if style == "llama3":  # no double BOS: the template writes it, the tokenizer must not add another
            assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id, f"{name}: BOS count"
        cases.append({
            "template": name,
            "messages": messages,
            "text": rendered,
            "input_ids": ids,
            "assistant_mask": hf_mask,
            "last_mask": last_mask,
            "generation_prompt": {"messages": prompt_messages, "text": prompt_text, "input_ids": prompt_ids},
        })
    return cases


def plain_cases(name: str, tokenizer) -> list[dict]:
    cases = []
    prefix_ids = tokenizer("", add_special_tokens=True)["input_ids"]
    prefix = "".join(tokenizer.convert_ids_to_tokens(prefix_ids))
    eos = tokenizer.eos_token
    for prompt, completion in PLAIN_CASES:
        text = prefix + prompt + completion + eos
        start = len(prefix) + len(prompt)
        ids, mask = mask_from_spans(tokenizer, text, [(start, len(text))])
        # TRL's non-conversational prompt-completion tokenisation gives the same ids.
        assert ids == list(tokenizer(prompt + completion + eos, add_special_tokens=True)["input_ids"])
        cases.append({"tokenizer": name, "prompt": prompt, "completion": completion, "text": text, "input_ids": ids,
                      "completion_mask": mask})
    return cases


def write_json(path: Path, value, indent: int | None = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, ensure_ascii=False, indent=indent) + "\n", encoding="utf-8")


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", type=Path, default=ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf")
    args = parser.parse_args()

    from gguf import GGUFReader
    smollm2_template = GGUFReader(str(args.gguf)).fields["tokenizer.chat_template"].contents()
    assert smollm2_template == QWEN2_TEMPLATE.replace("You are a helpful assistant.", SMOLLM2_SYSTEM), \
        "SmolLM2's template is expected to be Qwen2's with SmolLM's default system prompt"

    # Tokenizer directories.
    smollm2_config = json.loads((TOKENIZER_FIXTURES / "smollm2" / "tokenizer_config.json").read_text())
    smollm2_config["chat_template"] = smollm2_template
    smollm2_config["tokenizer_class"] = "GPT2Tokenizer"
    write_json(FIXTURES / "smollm2" / "tokenizer_config.json", smollm2_config)

    for folder, source, config in [
        ("qwen2-chat", "qwen2-synthetic", {
            "bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "add_bos_token": False,
            "chat_template": QWEN2_TEMPLATE, "tokenizer_class": "PreTrainedTokenizerFast"}),
        ("llama3-chat", "llama3-synthetic", {
            "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
            "chat_template": LLAMA3_TEMPLATE, "tokenizer_class": "PreTrainedTokenizerFast"}),
    ]:
        (FIXTURES / folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(TOKENIZER_FIXTURES / source / "tokenizer.json", FIXTURES / folder / "tokenizer.json")
        write_json(FIXTURES / folder / "tokenizer_config.json", config)

    smollm2 = load_tokenizer(FIXTURES / "smollm2", TOKENIZER_FIXTURES / "smollm2" / "tokenizer.json")
    qwen2 = load_tokenizer(FIXTURES / "qwen2-chat")
    llama3 = load_tokenizer(FIXTURES / "llama3-chat")

    cases = []
    cases += template_cases("smollm2", smollm2, smollm2_template, annotated_chatml(SMOLLM2_SYSTEM), "chatml", SMOLLM2_SYSTEM)
    cases += template_cases("qwen2", qwen2, QWEN2_TEMPLATE, annotated_chatml("You are a helpful assistant."), "chatml",
                            "You are a helpful assistant.")
    cases += template_cases("llama3", llama3, LLAMA3_TEMPLATE, ANNOTATED_LLAMA3, "llama3", None)
    plain = plain_cases("smollm2", smollm2) + plain_cases("llama3-chat", llama3)
    write_json(FIXTURES / "goldens.json", {
        "transformers_version": transformers.__version__,
        "tokenizers": {"smollm2": "../TokenizersTests/Fixtures/smollm2/tokenizer.json + smollm2/tokenizer_config.json",
                       "qwen2": "qwen2-chat", "llama3": "llama3-chat"},
        "templates": {"smollm2": smollm2_template, "qwen2": QWEN2_TEMPLATE, "llama3": LLAMA3_TEMPLATE},
        "conversations": cases,
        "plain": plain,
    })

    # Data files and the examples expected from them (SmolLM2 template).
    data = FIXTURES / "data"
    write_jsonl(data / "messages.jsonl", MESSAGES_JSONL)
    write_jsonl(data / "prompt_completion.jsonl", PROMPT_COMPLETION_JSONL)
    write_json(data / "alpaca.json", ALPACA, indent=2)
    write_jsonl(data / "alpaca.jsonl", ALPACA)
    conversations = {
        "messages.jsonl": [record["messages"] for record in MESSAGES_JSONL],
        "prompt_completion.jsonl": [prompt_completion_messages(record) for record in PROMPT_COMPLETION_JSONL],
        "alpaca.json": [alpaca_messages(record) for record in ALPACA],
        "alpaca.jsonl": [alpaca_messages(record) for record in ALPACA],
    }
    expected: dict[str, dict[str, list[dict]]] = {}
    for file, conversation_list in conversations.items():
        expected[file] = {"assistant": [], "last": [], "all": []}
        for messages in conversation_list:
            text, turns = spans("chatml", messages, SMOLLM2_SYSTEM, "")
            assert text == smollm2.apply_chat_template(messages, tokenize=False)
            for option, selected in [("assistant", turns), ("last", turns[-1:]), ("all", None)]:
                if selected is None:
                    ids = list(smollm2(text, add_special_tokens=False)["input_ids"])
                    labels = ids
                else:
                    ids, mask = mask_from_spans(smollm2, text, [(s, e) for _, s, e in selected])
                    labels = [token if keep else -100 for token, keep in zip(ids, mask)]
                expected[file][option].append({"input_ids": ids, "labels": labels})
    # The pre-tokenized form `inspect-data --jsonl` prints: train reads it back unchanged.
    write_jsonl(data / "pretokenized.jsonl", expected["messages.jsonl"]["assistant"])
    write_json(data / "expected.json", expected, indent=None)
    print(f"wrote {len(cases)} conversation goldens, {len(plain)} plain goldens and {len(expected)} data files to {FIXTURES}")


if __name__ == "__main__":
    main()
