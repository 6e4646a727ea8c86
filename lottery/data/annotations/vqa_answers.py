"""VQA answer normalisation and soft scores, as the official VQA evaluation (vqaEval.py) computes them.

Training targets must be normalised the way the leaderboard normalises predictions, or a model is
scored against strings it was never taught: "Two" is "2", "a dog" is "dog", "dont" is "don't".
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5"}
_NUMBERS.update({"six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"})
_ARTICLES = frozenset({"a", "an", "the"})
_PUNCTUATION = (
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
)
# vqaEval writes "(?!<=\d)(\.)(?!\d)", a lookahead where a lookbehind was meant: what it does is drop
# every period not followed by a digit ("3.5" keeps its period, "dog." loses it). We do the same.
_PERIOD = re.compile(r"\.(?!\d)")
_DIGIT_COMMA = re.compile(r"(\d)(,)(\d)")
# vqaEval's table, less its capitalised keys ("Im", "Ive", ...), which never match lowercased words,
# and its identities; keys are answers written without their apostrophe.
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've",
    "it'dve": "it'd've", "itll": "it'll", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've",
    "she'dve": "she'd've", "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd", "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've", "somebodyll": "somebody'll", "somebodys": "somebody's",
    "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas",
    "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't",
    "whatll": "what'll", "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's",
    "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}  # fmt: skip


def normalise_answer(answer: str) -> str:
    """The answer as vqaEval compares it: punctuation handled, lowercased, numbers as digits, no articles."""
    text = answer.replace("\n", " ").replace("\t", " ").strip()
    # vqaEval deletes a punctuation mark next to a space (or anywhere, if a digit comma is present),
    # and otherwise turns it into a space: "t-shirt" -> "t shirt", "yes!" -> "yes".
    original = text
    glue = bool(_DIGIT_COMMA.search(original))
    for mark in _PUNCTUATION:
        text = text.replace(mark, "" if glue or f"{mark} " in original or f" {mark}" in original else " ")
    text = _PERIOD.sub("", text)
    words = [_NUMBERS.get(word, word) for word in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(word, word) for word in words if word not in _ARTICLES)


def soft_scores(answers: Iterable[str]) -> dict[str, float]:
    """{normalised answer: min(1, #annotators who gave it / 3)}, sorted by answer.

    An answer that normalises to nothing ("the", "?") is no answer: it is left out rather than scored.
    """
    counts = Counter(a for a in map(normalise_answer, answers) if a)
    return {answer: min(1.0, count / 3) for answer, count in sorted(counts.items())}
