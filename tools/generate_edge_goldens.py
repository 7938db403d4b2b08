#!/usr/bin/env python3
"""Goldens for the byte rules at the edges of text input (docs/tokenizer.md, "Bytes at the edges").

Run with the project venv (HF `tokenizers`):

    /work/venv/bin/python tools/generate_edge_goldens.py

Writes Tests/TokenizersTests/Fixtures/smollm2/edge_goldens.json:

- `encode`: SmolLM2's tokenizer.json (`Tokenizer.encode(text).ids`) on texts with a byte-order mark,
  CR/LF line ends and other edge characters: what HF encodes for the Python `str` that
  `open(path, encoding="utf-8").read()` returns, so the BOM and every `\\r` are content.
- `invalid_utf8`: byte strings that Python's strict UTF-8 decoder refuses, with the offset and length
  of the first invalid sequence it reports (`UnicodeDecodeError.start`, `.end - .start`).
"""

import json
from pathlib import Path

from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "Tests" / "TokenizersTests" / "Fixtures" / "smollm2"

TEXTS = [
    "\ufeffHello",
    "\ufeff",
    "x\ufeffy",
    "\ufeff<|im_start|>user",
    "a\r\nb\r\n",
    "line one\r\nline two\n",
    "\r",
    "Hi\u2028there",
    "tab\there\u00a0nbsp",
]

INVALID = [
    b"ab\xffcd",
    b"\xe2\x82",
    b"ok\xe2\x82(",
    b"\xed\xa0\x80",
    b"\xc0\xaf",
    b"\xf4\x90\x80\x80",
    b"line1\nline2 \x80",
    b"\xef\xbb\xbf\xfe",
]


def main() -> None:
    tokenizer = Tokenizer.from_file(str(FIXTURE / "tokenizer.json"))
    encode = [{"text": text, "ids": tokenizer.encode(text).ids} for text in TEXTS]
    invalid = []
    for raw in INVALID:
        try:
            raw.decode("utf-8")
            raise SystemExit(f"{raw!r} decodes: not an invalid case")
        except UnicodeDecodeError as error:
            invalid.append({"hex": raw.hex(), "offset": error.start, "length": error.end - error.start})
    path = FIXTURE / "edge_goldens.json"
    path.write_text(json.dumps({"encode": encode, "invalid_utf8": invalid}, ensure_ascii=True, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
