"""Offline word-level tokenizers for the tiny models (:mod:`lmms_topo_plugin.families.tiny`), built with the
`tokenizers` library."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from tokenizers import AddedToken, Regex, Tokenizer, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

UNK_TOKEN = "[UNK]"
PUNCTUATION = ("?", ".", ",", "!", ":", ";")
ROLE_KEYS = ("bos_token", "eos_token", "pad_token")

DEFAULT_WORDS = (
    "a an the this that these those is are was were be been it its in on at of to for with from by and or but not "
    "no yes what which who where when why how many much there here image picture photo color colour shape size "
    "red green blue yellow black white orange purple pink brown gray grey dark light big small large tiny left "
    "right top bottom middle center up down above below next one two three four five six seven eight nine ten "
    "circle square triangle line dot box cat dog car tree house person sky sun do does can you i me my we they "
    "he she show shows shown see seen describe answer question please helpful short word count number only"
).split()
DIGITS = tuple(str(i) for i in range(21))
ROLE_WORDS = ("user", "assistant", "system")  # rendered by every chat template


def default_vocab_words() -> list[str]:
    """The built-in vocabulary: common words, digits 0-20, punctuation and the chat role words."""
    return list(dict.fromkeys([*DEFAULT_WORDS, *DIGITS, *PUNCTUATION, *ROLE_WORDS]))


def _special_token_list(special_tokens: Mapping[str, str | list[str]] | Iterable[str]) -> list[str]:
    """Flattens a `{role: token or [tokens]}` mapping or a plain token list into unique token strings."""
    values = special_tokens.values() if isinstance(special_tokens, Mapping) else special_tokens
    flat: list[str] = []
    for value in values:
        flat.extend([value] if isinstance(value, str) else value)
    return list(dict.fromkeys(flat))


def _vocab(words: Iterable[str], specials: list[str]) -> dict[str, int]:
    """Maps [UNK], the special tokens, then the lowercased words to consecutive ids."""
    ordered = dict.fromkeys([UNK_TOKEN, *specials, *(word.lower() for word in words)])
    return {token: index for index, token in enumerate(ordered)}


def _backend(vocab: dict[str, int], specials: list[str]) -> Tokenizer:
    """A `tokenizers.Tokenizer`: lowercase, split on whitespace and punctuation, word-level lookup."""
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    backend.normalizer = normalizers.Lowercase()
    punctuation = Regex("[" + "".join("\\" + mark for mark in PUNCTUATION) + "]")
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(punctuation, behavior="isolated")]
    )
    backend.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in [UNK_TOKEN, *specials]])
    return backend


def _roles(special_tokens: Mapping[str, str | list[str]] | Iterable[str]) -> dict[str, str]:
    """The `bos_token`, `eos_token` and `pad_token` entries of a special-token mapping."""
    if not isinstance(special_tokens, Mapping):
        return {}
    return {key: special_tokens[key] for key in ROLE_KEYS if key in special_tokens}


def build_tokenizer(
    vocab_words: list[str] | None,
    special_tokens: Mapping[str, str | list[str]] | Iterable[str],
    **tokenizer_kwargs,
) -> PreTrainedTokenizerFast:
    """Builds a word-level fast tokenizer with `special_tokens` kept whole and marked special.

    `special_tokens` is a plain list or a mapping such as `{"bos_token": "<s>", "image": ["<image>"]}`,
    whose `bos_token`, `eos_token` and `pad_token` keys set those roles (other keys only group tokens).
    `vocab_words` defaults to `default_vocab_words()`; punctuation and the chat role words are always
    in the vocabulary. `tokenizer_kwargs` (e.g. `chat_template`) go to `PreTrainedTokenizerFast`.
    """
    specials = _special_token_list(special_tokens)
    words = default_vocab_words() if vocab_words is None else [*vocab_words, *PUNCTUATION, *ROLE_WORDS]
    return PreTrainedTokenizerFast(
        tokenizer_object=_backend(_vocab(words, specials), specials),
        unk_token=UNK_TOKEN,
        **_roles(special_tokens),
        **tokenizer_kwargs,
    )
