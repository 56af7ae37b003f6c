"""The CLIP BPE tokenizer, built offline from the vocabulary open_clip ships.

open_clip's `bpe_simple_vocab_16e6.txt.gz` is the only CLIP vocab in our dependency set and is the vocabulary of
`openai/clip-vit-large-patch14` (SD v1.x's text encoder), so ids match the real tokenizer exactly. The file is read
from open_clip's package folder without importing open_clip, whose import (timm and more) takes 2 s.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import tempfile
from functools import lru_cache
from pathlib import Path

# Layout of the BPE file (open_clip / OpenAI CLIP): a header line, then 49152 - 256 - 2 merges.
_NUM_MERGES = 49152 - 256 - 2
START_OF_TEXT, END_OF_TEXT = "<|startoftext|>", "<|endoftext|>"


@lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode  # GPT-2's byte-level alphabet, as CLIP's

    (package,) = importlib.util.find_spec("open_clip").submodule_search_locations
    with gzip.open(Path(package, "bpe_simple_vocab_16e6.txt.gz")) as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : _NUM_MERGES + 1]]
    byte_tokens = list(bytes_to_unicode().values())
    tokens = byte_tokens + [t + "</w>" for t in byte_tokens] + ["".join(m) for m in merges]
    tokens += [START_OF_TEXT, END_OF_TEXT]
    return {token: index for index, token in enumerate(tokens)}, tuple(merges)


@lru_cache(maxsize=4)
def build_clip_tokenizer(model_max_length: int = 77):
    """A `transformers.CLIPTokenizer` with SD v1.x conventions (pads with <|endoftext|>). One per length and process
    (a tokenizer holds no state that encoding changes): the prompt checks and the model share it.

    It is loaded from vocab.json + merges.txt files, the one constructor that transformers 4.x and 5.x share.
    """
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges()
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        merge_lines = "\n".join(" ".join(m) for m in merges)
        Path(folder, "merges.txt").write_text("#version: 0.2\n" + merge_lines + "\n", encoding="utf-8")
        return CLIPTokenizer.from_pretrained(folder, model_max_length=model_max_length)
