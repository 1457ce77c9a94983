"""Text pre-processing for the AG-News task: normalisation, tokenizer, vocabulary, encoding.

No torchtext: the project only needs a lower-casing regex tokenizer, a frequency-ranked
vocabulary built from the *training* text, and fixed-length padding/truncation, which are a
few lines of plain Python and keep the dependency list short.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
import torch

__all__ = [
    "PAD_TOKEN",
    "UNK_TOKEN",
    "PAD_INDEX",
    "UNK_INDEX",
    "normalize_text",
    "tokenize",
    "Vocabulary",
    "encode_texts",
]

PAD_TOKEN = "<pad>"
UNK_TOKEN = "<unk>"
# Padding must be index 0: the model's embedding uses padding_idx=0 and sequence lengths are
# computed as the number of non-zero ids.
PAD_INDEX = 0
UNK_INDEX = 1

# AG-News stores HTML entities with the leading "&" stripped (" #39;" for an apostrophe,
# " quot;" for a double quote) and uses a backslash where the source had a line break.
_NUMERIC_ENTITY = re.compile(r"&?#(\d{1,6});")
_NAMED_ENTITY = re.compile(r"(?<![&\w])(quot|amp|lt|gt|apos);")
_TAG = re.compile(r"<[^>]*>")
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def _numeric_entity(match: re.Match[str]) -> str:
    code = int(match.group(1))
    # Code points outside the valid range would make chr() raise; treat them as blanks.
    return chr(code) if 0 < code < 0x110000 else " "


def normalize_text(text: str) -> str:
    """Undo AG-News' escaping and lower-case the text.

    Parameters
    ----------
    text : str
        Raw title or description as stored in the AG-News CSV files.

    Returns
    -------
    str
        Lower-case text with HTML entities decoded, HTML tags and backslashes replaced by
        spaces.
    """
    text = text.replace("\\", " ")
    text = _NUMERIC_ENTITY.sub(_numeric_entity, text)
    text = _NAMED_ENTITY.sub(r"&\1;", text)
    text = html.unescape(text)
    text = _TAG.sub(" ", text)
    # Typographic apostrophes would otherwise split "don't" differently from "don't".
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    return text.lower()


def tokenize(text: str) -> list[str]:
    """Split text into lower-case word tokens.

    A token is a run of ASCII letters or digits, optionally followed by an apostrophe suffix
    ("kerry's", "don't").  Punctuation is dropped.

    Parameters
    ----------
    text : str
        Raw text.

    Returns
    -------
    list of str
        Tokens in reading order.
    """
    return _TOKEN.findall(normalize_text(text))


class Vocabulary:
    """Token-to-index mapping with ``<pad>`` = 0 and ``<unk>`` = 1.

    Tokens are ranked by decreasing frequency, ties broken alphabetically, so the mapping is
    a pure function of the training text and the two size limits.

    Parameters
    ----------
    tokens : sequence of str
        Regular tokens in index order (indices 2, 3, ...).
    """

    def __init__(self, tokens: Sequence[str]) -> None:
        self.itos: list[str] = [PAD_TOKEN, UNK_TOKEN, *tokens]
        self.stoi: dict[str, int] = {tok: i for i, tok in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("Vocabulary tokens must be unique")

    @classmethod
    def build(
        cls,
        tokenized_texts: Iterable[Sequence[str]],
        *,
        min_freq: int = 2,
        max_size: int | None = None,
    ) -> Vocabulary:
        """Build a vocabulary from tokenized training texts.

        Parameters
        ----------
        tokenized_texts : iterable of sequences of str
            Training documents only (building from test text would leak it).
        min_freq : int, default 2
            Tokens seen fewer times are mapped to ``<unk>``.
        max_size : int or None
            Maximum number of entries *including* ``<pad>`` and ``<unk>``.

        Returns
        -------
        Vocabulary
        """
        if min_freq < 1:
            raise ValueError(f"min_freq must be >= 1, got {min_freq}")
        if max_size is not None and max_size < 2:
            raise ValueError(f"max_size must be >= 2 (room for <pad> and <unk>), got {max_size}")
        counts: Counter[str] = Counter()
        for tokens in tokenized_texts:
            counts.update(tokens)
        ranked = sorted(
            (tok for tok, c in counts.items() if c >= min_freq and tok not in (PAD_TOKEN, UNK_TOKEN)),
            key=lambda tok: (-counts[tok], tok),
        )
        if max_size is not None:
            ranked = ranked[: max_size - 2]
        return cls(ranked)

    def __len__(self) -> int:
        return len(self.itos)

    def lookup(self, tokens: Iterable[str]) -> list[int]:
        """Indices of ``tokens`` (``<unk>`` for unknown ones)."""
        get = self.stoi.get
        return [get(tok, UNK_INDEX) for tok in tokens]


def encode_texts(
    tokenized_texts: Sequence[Sequence[str]], vocab: Vocabulary, max_len: int
) -> torch.Tensor:
    """Encode tokenized texts as a padded ``(N, max_len)`` int64 tensor.

    Longer texts are truncated (the start is kept: in news, title and lead carry the topic);
    shorter ones are right-padded with ``<pad>`` = 0.  An empty text becomes a single
    ``<unk>`` so every row has length >= 1 (packed LSTMs reject length 0).

    Parameters
    ----------
    tokenized_texts : sequence of sequences of str
        Documents to encode.
    vocab : Vocabulary
        Mapping built from the training text.
    max_len : int
        Fixed sequence length.

    Returns
    -------
    torch.Tensor
        ``(N, max_len)`` int64 token ids.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    out = np.full((len(tokenized_texts), max_len), PAD_INDEX, dtype=np.int64)
    for row, tokens in enumerate(tokenized_texts):
        ids = vocab.lookup(tokens[:max_len]) or [UNK_INDEX]
        out[row, : len(ids)] = ids
    return torch.from_numpy(out)
