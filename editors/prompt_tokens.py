"""Token bookkeeping for attention editing: which token positions a word occupies, and how the tokens of a target
prompt align with those of the source prompt (Prompt-to-Prompt's word swap and refinement mappers)."""

from __future__ import annotations

import torch

MAX_TOKENS = 77


def word_tokens(tokenizer, prompt: str) -> list[list[int]]:
    """For each space-separated word of `prompt`, its token positions in the encoded prompt (position 0 is the
    start token). CLIP's BPE never merges across spaces, so encoding word by word gives the prompt's tokens."""
    positions, cursor = [], 1
    for word in prompt.split(" "):
        count = len(tokenizer(word, add_special_tokens=False).input_ids)
        positions.append(list(range(cursor, cursor + count)))
        cursor += count
    return positions


def token_positions(tokenizer, prompt: str, word: str | int) -> list[int]:
    """Token positions (0 is the start token) of `word` in `prompt`: of every occurrence of a word given as text
    (exact match), or of the word at an index of `prompt.split(" ")`. Found as Prompt-to-Prompt's reference finds
    them (`get_word_inds` in PnPInversion's utils/utils.py), quirks included: the words are `prompt.split(" ")` (a
    double space makes an empty word); the tokens are walked in order, adding up the length of each one's decoded
    text, and a word is taken to end once the running length reaches its own. Where that count runs out of step with
    the words (a double space, text the tokenizer normalises), the reference finds fewer or no tokens, and so does
    this. [] when the word is not found."""
    words = prompt.split(" ")
    wanted = {word} if isinstance(word, int) else {i for i, w in enumerate(words) if w == word}
    if not wanted:
        return []
    pieces = [tokenizer.decode([token]).strip("#") for token in tokenizer.encode(prompt, verbose=False)][1:-1]
    positions, length, current = [], 0, 0
    for index, piece in enumerate(pieces):
        if current >= len(words):  # more tokens than the words account for: the reference would fail here
            break
        length += len(piece)
        if current in wanted:
            positions.append(index + 1)
        if length >= len(words[current]):
            current, length = current + 1, 0
    return positions


def words_beyond_limit(tokenizer, sample, limit: int) -> list[str]:
    """For each of a sample's blended words that lies (wholly or partly) beyond the `limit` tokens a text encoder
    reads (start and end tokens included), what and where, with the fix; [] when both lie within."""
    problems = []
    for which, prompt, word in (("source", sample.source_prompt, sample.blended_words[0]),
                                ("target", sample.target_prompt, sample.blended_words[1])):  # fmt: skip
        positions = token_positions(tokenizer, prompt, word)
        if positions and max(positions) >= limit - 1:
            problems.append(
                f"blended word '{word}' sits at token {max(positions)} of the {which} prompt, but the text encoder "
                f"reads {limit} tokens (start and end included: words up to token {limit - 2}), so the blend and "
                "re-weighting would act on a word the model never sees. Fix: shorten the prompt so that the word "
                "comes earlier, or drop blended_words (no local blend)"
            )
    return problems


def replacement_mapper(tokenizer, source: str, target: str) -> torch.Tensor:
    """Prompt-to-Prompt's word-swap mapper (`get_replacement_mapper`): a (77, 77) matrix M such that target token n
    reads Σ_w source_w · M[w, n]. The prompts need the same number of words; a swapped word's target tokens share
    its source tokens (each 1/len(target tokens) when the counts differ); other tokens read themselves. As the
    reference, once past the last swapped word the mapper is the identity on the target's positions."""
    source_words, target_words = source.split(" "), target.split(" ")
    if len(source_words) != len(target_words):
        raise ValueError(
            f"word swap needs prompts with the same number of words: '{source}' has {len(source_words)}, "
            f"'{target}' has {len(target_words)}"
        )
    swapped = [i for i, (a, b) in enumerate(zip(source_words, target_words)) if a != b]
    # a word beyond the encoder's tokens is cut from the prompt: the model never reads it, so nothing maps it
    source_spans = [[p for p in token_positions(tokenizer, source, i) if p < MAX_TOKENS] for i in swapped]
    target_spans = [[p for p in token_positions(tokenizer, target, i) if p < MAX_TOKENS] for i in swapped]
    mapper = torch.zeros(MAX_TOKENS, MAX_TOKENS)
    i = j = span = 0
    while i < MAX_TOKENS and j < MAX_TOKENS:
        if span < len(source_spans) and source_spans[span] and source_spans[span][0] == i:
            source_tokens, target_tokens = source_spans[span], target_spans[span]
            if len(source_tokens) == len(target_tokens):
                mapper[source_tokens, target_tokens] = 1
            else:
                for token in target_tokens:
                    mapper[source_tokens, token] = 1 / len(target_tokens)
            span, i, j = span + 1, i + len(source_tokens), j + len(target_tokens)
        elif span < len(source_spans):
            mapper[i, j] = 1
            i, j = i + 1, j + 1
        else:
            mapper[j, j] = 1
            i, j = i + 1, j + 1
    return mapper


def swap_compatible(tokenizer, source: str, target: str) -> bool:
    """Word swap needs the same number of words and, word for word, the same number of tokens: then token i of the
    target takes the cross-attention of token i of the source."""
    source_words, target_words = word_tokens(tokenizer, source), word_tokens(tokenizer, target)
    return len(source_words) == len(target_words) and all(len(a) == len(b) for a, b in zip(source_words, target_words))


def refinement_mapper(tokenizer, source: str, target: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(mapper, alphas), each (77,): target token j reads the source token mapper[j] where alphas[j] = 1; tokens
    new in the target (alphas 0) keep their own attention. The alignment is a global (Needleman-Wunsch) alignment
    of the token ids with match 1, mismatch -1, gap 0, ties broken as in Prompt-to-Prompt's seq_aligner."""
    x, y = (tokenizer(p, truncation=True, max_length=MAX_TOKENS).input_ids for p in (source, target))
    score = [[0] * (len(y) + 1) for _ in range(len(x) + 1)]
    move = [[0] * (len(y) + 1) for _ in range(len(x) + 1)]  # 1: left (gap in x), 2: up (gap in y), 3: diagonal
    for j in range(1, len(y) + 1):
        move[0][j] = 1
    for i in range(1, len(x) + 1):
        move[i][0] = 2
        for j in range(1, len(y) + 1):
            left, up = score[i][j - 1], score[i - 1][j]
            diagonal = score[i - 1][j - 1] + (1 if x[i - 1] == y[j - 1] else -1)
            score[i][j] = max(left, up, diagonal)
            move[i][j] = 1 if score[i][j] == left else 2 if score[i][j] == up else 3
    aligned: list[int] = []  # for each target token, in reverse order: its source position or -1
    i, j = len(x), len(y)
    while i > 0 or j > 0:
        if move[i][j] == 3:
            i, j = i - 1, j - 1
            aligned.append(i)
        elif move[i][j] == 1:
            j -= 1
            aligned.append(-1)
        else:
            i -= 1
    aligned.reverse()
    mapper = torch.arange(MAX_TOKENS)  # padding tokens read the same position
    mapper[: len(aligned)] = torch.tensor(aligned)
    alphas = torch.ones(MAX_TOKENS)
    alphas[: len(aligned)] = (mapper[: len(aligned)] >= 0).float()
    return mapper, alphas
