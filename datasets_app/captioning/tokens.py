"""CLIP token counts for captions, without torch: SD 1.5 and SDXL read at most 75 tokens.

Exact when the operator points `CLIP_TOKENIZER_DIR` at a real CLIP tokenizer (the `tokenizer/`
folder of any SD 1.5/SDXL diffusers model: `vocab.json` + `merges.txt`, or a `tokenizer.json`);
it is loaded with the `tokenizers` package. Without one, the count is CLIP's pre-tokenizer word
count, a lower bound (every pre-token becomes at least one BPE token), and says so.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path

LIMIT = 75
# CLIP's pre-tokenizer (openai/CLIP simple_tokenizer), with Python's `re` classes for \p{L}/\p{N}.
_PRETOKEN = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|(?:[^\s\w]|_)+", re.IGNORECASE)
_lock = threading.Lock()
_loaded: dict[str, object] = {}


@dataclass(frozen=True)
class TokenCount:
    count: int
    exact: bool

    @property
    def over_limit(self) -> bool:
        return self.count > LIMIT


def lower_bound(text: str) -> int:
    return len(_PRETOKEN.findall(" ".join(text.lower().split())))


def load_clip_tokenizer(folder: str | Path):
    """A `tokenizers.Tokenizer` doing CLIP's BPE from a CLIP tokenizer folder (or file)."""
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import BPE

    path = Path(folder)
    if path.is_file():
        return Tokenizer.from_file(str(path))
    if (path / "tokenizer.json").exists():
        return Tokenizer.from_file(str(path / "tokenizer.json"))
    vocab = json.loads((path / "vocab.json").read_text(encoding="utf-8"))
    merges = []
    for line in (path / "merges.txt").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#version"):
            left, right = line.split(" ", 1)
            merges.append((left, right))
    # The same construction transformers' CLIPConverter uses for the fast CLIP tokenizer.
    tokenizer = Tokenizer(BPE(vocab=vocab, merges=merges, unk_token="<|endoftext|>", end_of_word_suffix="</w>",
                              fuse_unk=False, continuing_subword_prefix="", dropout=None))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                                 normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"),
                             behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    return tokenizer


def _configured():
    from django.conf import settings

    folder = getattr(settings, "CLIP_TOKENIZER_DIR", "")
    if not folder:
        return None
    with _lock:
        if folder not in _loaded:
            _loaded[folder] = load_clip_tokenizer(folder)
        return _loaded[folder]


def count_tokens(text: str, tokenizer=None) -> TokenCount:
    tokenizer = tokenizer if tokenizer is not None else _configured()
    if tokenizer is None:
        return TokenCount(lower_bound(text), exact=False)
    return TokenCount(len(tokenizer.encode(text, add_special_tokens=False).ids), exact=True)


def count(text: str) -> int:
    return count_tokens(text).count
