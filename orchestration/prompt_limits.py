"""Prompts against the text encoders' token limits, checked before any model loads.

Every family's reference pipeline cuts a prompt to the tokens its text encoder reads (CLIP: 77 with the start and end
tokens; SD3's and FLUX's T5: their pipelines' max_sequence_length) and goes on; the PIE-Bench reference does the same
for SD 1.4. invbench follows them, so a long prompt gives the published method's result, and says so: the row
records the cut (`prompt_truncated`), the log warns, and the job summary counts such samples. What a cut would turn
into a silently wrong row is refused instead, naming the sample, the token counts and the limit:
- prompts that differ only after the limit (the model would read the same prompt twice: no edit);
- a blended word the editor reads (P2P's local blend and re-weighting) beyond the tokens the encoder reads
  (`Editor.prompt_problems`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from invbench.backbones import backbone_class
from pie_bench import InvalidSample, Sample

log = logging.getLogger(__name__)

Encoders = list[tuple[str, Any, int]]  # (name, tokenizer, tokens it reads)


def prompt_encoders(model_config: Mapping[str, Any]) -> Encoders:
    """The text encoders of a conf/model/*.yaml node with their tokenizers and limits (no network is loaded)."""
    return backbone_class(model_config).prompt_tokenizers(model_config)


def truncation(sample: Sample, encoders: Encoders) -> dict[str, str]:
    """Encoder name -> what it cuts of this sample's prompts; {} when both prompts fit every encoder."""
    cut = {}
    for name, tokenizer, limit in encoders:
        lengths = {which: len(tokenizer(prompt, verbose=False).input_ids) for which, prompt in _prompts(sample)}
        over = [f"{which} prompt {count} tokens" for which, count in lengths.items() if count > limit]
        if over:
            cut[name] = f"{' and '.join(over)}, cut to {limit} as the reference pipeline does"
    return cut


def prompt_problems(sample: Sample, encoders: Encoders, editor: Any) -> list[str]:
    """Why this sample cannot run with these encoders and this editor ([] when it can)."""
    if not encoders:
        return []
    problems = []
    if sample.source_prompt != sample.target_prompt:
        same = all(
            tokenizer(sample.source_prompt, max_length=limit, truncation=True).input_ids
            == tokenizer(sample.target_prompt, max_length=limit, truncation=True).input_ids
            for _, tokenizer, limit in encoders
        )
        if same:
            counts = ", ".join(
                f"{name}: {len(tokenizer(sample.source_prompt, verbose=False).input_ids)} and "
                f"{len(tokenizer(sample.target_prompt, verbose=False).input_ids)} tokens, limit {limit}"
                for name, tokenizer, limit in encoders
            )
            problems.append(
                f"{_where(sample)}: the source and target prompts differ only after the tokens the text encoders "
                f"read ({counts}), so the model would read the same prompt twice and edit nothing. Fix: shorten the "
                "prompts so that the edited words come earlier"
            )
    _, tokenizer, limit = encoders[0]  # token-level editors index the first CLIP encoder's tokens
    problems += [f"{_where(sample)}: {problem}" for problem in editor.prompt_problems(sample, tokenizer, limit)]
    return problems


def check_samples(
    entries: Sequence[Sample | InvalidSample], encoders: Encoders, editor: Any
) -> tuple[list[Sample | InvalidSample], dict[str, dict[str, str]]]:
    """(the entries with those that cannot run as InvalidSamples naming why, sample id -> its prompts' cuts). Each
    sample is checked as the editor prepares it (MasaCtrl's "" source prompt)."""
    checked, cuts = [], {}
    for entry in entries:
        if isinstance(entry, Sample):
            seen = editor.prepare_sample(entry)
            problems = prompt_problems(seen, encoders, editor)
            if problems:
                entry = InvalidSample(
                    entry.id, tuple(problems), entry.editing_type, entry.image_path, entry.entry_sha256
                )
            else:
                cut = truncation(seen, encoders)
                if cut:
                    cuts[entry.id] = cut
                    log.warning("sample %s: prompt longer than the text encoder reads: %s", entry.id, "; ".join(
                        f"{name}: {what}" for name, what in cut.items()))  # fmt: skip
        checked.append(entry)
    return checked, cuts


def _prompts(sample: Sample) -> tuple[tuple[str, str], ...]:
    return (("source", sample.source_prompt), ("target", sample.target_prompt))


def _where(sample: Sample) -> str:
    return sample.origin or f"sample '{sample.id}'"
