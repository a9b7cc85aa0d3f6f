#!/usr/bin/env python3
"""The device-side twin of edge_distill's word tokenizer: standard library + numpy, nothing else.

Reads the ``tokenizer.json`` that ships with a text model (format ``edge-distill-words-1``) and turns text
into the int32 token ids the model takes, by the rule written in that file:

1. ``unicodedata.normalize("NFKC", text).lower()``;
2. words are the maximal runs of letters and digits (``word_pattern``, ``[^\\W_]+``);
3. a word's id is its index in ``vocab``, else ``unk_id``;
4. cut to ``seq_len``, pad with ``pad_id`` at the end.

Written separately from the host's implementation on purpose: tests compare the two on real text, so
a change to either that alters a single id fails the build instead of silently shifting a deployed model.

    python3 tokenizer.py tokenizer.json "a domestic dog"     # prints the ids
"""

from __future__ import annotations

import json
import re
import sys
import unicodedata

FORMAT = "edge-distill-words-1"


class Tokenizer:
    def __init__(self, spec: dict) -> None:
        if spec.get("format") != FORMAT:
            raise ValueError("tokenizer format {!r} is not {!r}".format(spec.get("format"), FORMAT))
        self.seq_len = int(spec["seq_len"])
        self.pad_id = int(spec["pad_id"])
        self.unk_id = int(spec["unk_id"])
        self.lowercase = bool(spec.get("lowercase", True))
        self.normalize = spec.get("normalize") or None
        self.pattern = re.compile(spec["word_pattern"])
        self.index = {word: i for i, word in enumerate(spec["vocab"])}

    @classmethod
    def from_file(cls, path: str) -> "Tokenizer":
        with open(path, encoding="utf-8") as fh:
            return cls(json.load(fh))

    def ids(self, text: str) -> list:
        if self.normalize:
            text = unicodedata.normalize(self.normalize, text)
        if self.lowercase:
            text = text.lower()
        ids = [self.index.get(word, self.unk_id) for word in self.pattern.findall(text)][: self.seq_len]
        return ids + [self.pad_id] * (self.seq_len - len(ids))

    def encode(self, texts):
        """(N, seq_len) int32 array."""
        import numpy as np

        return np.array([self.ids(t) for t in texts], dtype=np.int32).reshape(-1, self.seq_len)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: tokenizer.py tokenizer.json TEXT...")
    tok = Tokenizer.from_file(sys.argv[1])
    for text in sys.argv[2:]:
        print(" ".join(str(i) for i in tok.ids(text)))
