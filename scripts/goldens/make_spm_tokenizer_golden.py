#!/usr/bin/env python3
"""scripts/goldens/make_spm_tokenizer_golden.py — a SentencePiece-style Hugging Face
tokenizer and Hugging Face's own token ids for the tokenizer cases.

LLaMA 2-family checkpoints (LLaMA 2, TinyLlama, Vicuna, ...) ship tokenizer.json files that
transformers converted from a SentencePiece BPE model: byte fallback, "▁" for spaces, a
"Prepend ▁" + "Replace ' ' -> ▁" normalizer. None of them is reachable from the machines
kiln is built on, so this script makes one the same way: it trains a small SentencePiece
BPE model (2000 pieces, byte fallback, digits split, as LLaMA's) on the first 3 MB of the
King James Bible (scripts/setup.sh fetches it), converts it with transformers 4.46's
LlamaTokenizerFast (legacy=True, add_prefix_space=True: what those checkpoints carry), and
writes into tests/goldens/spm_tokenizer/:

  tokenizer.json, tokenizer_config.json   the checkpoint's tokenizer files
  spm_tokenizer.golden                    for each case of tests/goldens/tokenizer_cases.txt:
                                          parse_special, text (hex), the ids Hugging Face's
                                          tokenizer gives (no BOS), their decoding (hex)

It checks that the converted tokenizer agrees with the SentencePiece model itself on every
case without special tokens (the conversion is faithful). tests/unit/hf_checkpoint_test.cpp
reads the files. Needs: pip install sentencepiece protobuf, and transformers==4.46.3,
tokenizers==0.20.3, huggingface-hub==0.26.5 (newer transformers cannot convert a
SentencePiece file given alone). Run once; the outputs are committed.

usage: make_spm_tokenizer_golden.py [KJV_TEXT]
"""
import json
import os
import re
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(ROOT, "tests", "goldens", "spm_tokenizer")
CASES = os.path.join(ROOT, "tests", "goldens", "tokenizer_cases.txt")


def unescape(s):
    out = bytearray()
    i = 0
    while i < len(s):
        c = s[i]
        if c != "\\":
            out += c.encode("utf-8")
            i += 1
            continue
        n = s[i + 1]
        if n in "nrt\\":
            out += {"n": b"\n", "r": b"\r", "t": b"\t", "\\": b"\\"}[n]
            i += 2
        elif n == "x":
            out.append(int(s[i + 2:i + 4], 16))
            i += 4
        elif n == "u":
            j = s.index("}", i)
            out += chr(int(s[i + 3:j], 16)).encode("utf-8")
            i = j + 1
        else:
            raise ValueError(f"bad escape in {s!r}")
    return out.decode("utf-8")


def main():
    import sentencepiece as spm
    from transformers import LlamaTokenizerFast

    text_path = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser("~/.cache/kiln/text/kjv.txt")
    with tempfile.TemporaryDirectory() as tmp:
        train = os.path.join(tmp, "train.txt")
        with open(text_path, "rb") as f, open(train, "wb") as g:
            g.write(f.read(3_000_000))
        prefix = os.path.join(tmp, "m")
        spm.SentencePieceTrainer.train(
            input=train, model_prefix=prefix, vocab_size=2000, model_type="bpe", byte_fallback=True,
            character_coverage=1.0, split_digits=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
            add_dummy_prefix=True, remove_extra_whitespaces=False, normalization_rule_name="identity",
            num_threads=1, minloglevel=2)
        sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
        tok = LlamaTokenizerFast(vocab_file=prefix + ".model", legacy=True, add_prefix_space=True, from_slow=True)
        os.makedirs(OUT, exist_ok=True)
        tok.save_pretrained(tmp + "/hf")
        for name in ("tokenizer.json", "tokenizer_config.json"):
            with open(os.path.join(tmp, "hf", name)) as f:
                data = json.load(f)
            with open(os.path.join(OUT, name), "w") as f:
                json.dump(data, f, ensure_ascii=False, indent=1 if name == "tokenizer_config.json" else None,
                          separators=None if name == "tokenizer_config.json" else (",", ":"))
                f.write("\n")

    backend = tok.backend_tokenizer
    lines = ["# Hugging Face tokenizers' ids for tests/goldens/tokenizer_cases.txt with the SentencePiece-style",
             "# tokenizer.json of this folder (scripts/goldens/make_spm_tokenizer_golden.py). One case per line:",
             "# <parse_special>\\t<text hex>\\t<ids, no BOS>\\t<decoded hex, special tokens rendered>"]
    agree = cases = 0
    with open(CASES, encoding="utf-8") as f:
        for raw in f:
            raw = raw.rstrip("\n")
            if not raw or raw.startswith("#"):
                continue
            flag, esc = raw.split("\t", 1)
            text = unescape(esc)
            backend.encode_special_tokens = flag == "0"  # 0: control-token texts are plain text
            ids = backend.encode(text, add_special_tokens=False).ids
            decoded = backend.decode(ids, skip_special_tokens=False)
            if flag == "0":
                cases += 1
                agree += ids == sp.encode(text)
            lines.append(f"{flag}\t{text.encode().hex()}\t{' '.join(map(str, ids))}\t{decoded.encode().hex()}")
    with open(os.path.join(OUT, "spm_tokenizer.golden"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{len(lines) - 3} cases written; the converted tokenizer agrees with SentencePiece on {agree}/{cases} "
          "cases without special tokens")
    if agree != cases:
        sys.exit(1)


if __name__ == "__main__":
    main()
