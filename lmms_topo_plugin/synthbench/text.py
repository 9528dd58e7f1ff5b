"""The text side of the benchmark: prompts, word-level tokenisation, vocabulary, answer normalisation."""

from __future__ import annotations

import re
import string

from lmms_topo_plugin.synthbench.questions import ANSWERS, FILLERS, TEMPLATES

INSTRUCTION = "Answer with a single word or number."
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")

_TOKEN = re.compile(r"[?.,!]|[^\s?.,!]+")


def prompt_for(doc: dict) -> str:
    """The text a model is given for `doc`: its question, a newline, the short-answer instruction."""
    return f"{doc['question']}\n{INSTRUCTION}"


def tokenize(text: str) -> list[str]:
    """Lowercase words; each of `?.,!` is a token of its own."""
    return _TOKEN.findall(text.lower())


def vocabulary() -> list[str]:
    """Every token that can appear in a prompt or an answer, sorted."""
    literals = [literal for template in TEMPLATES for literal, *_ in string.Formatter().parse(template)]
    return sorted({token for text in (*literals, *FILLERS, *ANSWERS, INSTRUCTION) for token in tokenize(text)})


def normalize_answer(text: str) -> str:
    """The first word of `text`, lowercased, without surrounding punctuation; number words become digits."""
    for word in text.lower().split():
        word = word.strip(string.punctuation)
        if word:
            return str(NUMBER_WORDS.index(word)) if word in NUMBER_WORDS else word
    return ""
