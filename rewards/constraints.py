"""Verifiable instruction following (in the spirit of IFEval): the one registry of constraint checkers.

A prompt of this family is an everyday writing task followed by one or two constraint sentences,
in English or Chinese: "Describe a rainy morning. Answer with at most 40 words. Do not use any
commas in your response." Each constraint type owns its instruction template per language, its
checker and how to sample its parameters, so the data generator (`data/tasks/instructions.py`),
the preference judge, the PPO rule reward and the evaluation all ask the same question the same
way: does this response follow its constraints?

To add a type, write one checker decorated with `@register(name, en=..., zh=..., sample=...)`:
the template's fields (`{n}`, `{word}`, `{phrase}`, `{keys}`) are how its parameters are shown
and read back; list the types it contradicts in `conflicts` (the relation is symmetric) and, if a
contradiction depends on the parameters, add a line to `_params_clash`.

Constraints are parsed back from the prompt's text (`parse_constraints`) with regexes built from
the same templates, because the preference store, the labelling app and the rollouts keep only
the conversation, never the generator's metadata; the generator refuses any prompt that does not
parse back to exactly the constraints it chose, so the two cannot drift.

Counting rules, shared by every checker:
- words: each CJK character is one word; the rest is split on whitespace and a token counts when
  it has a letter or digit (so "-" bullets and "—" are not words);
- sentences: a text is cut after `.`, `!` or `?` followed by whitespace, a closing quote or the
  end, after `。！？`, and at every line break; a piece counts when it has a letter or digit (so a
  title line or a bullet is a sentence);
- paragraphs: pieces of the stripped text separated by a blank line (one or more empty or
  whitespace-only lines), that have a letter or digit;
- a response with no letter or digit at all follows no constraint (an empty reply must not earn
  "at most 20 words" or "no commas").
"""

from __future__ import annotations

import json
import random
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from rewards.messages import Messages, last_user_turn

Lang = Literal["en", "zh"]
LANGS: tuple[Lang, ...] = ("en", "zh")

HELD_OUT_TYPES: tuple[str, ...] = ("quotation", "postscript")
"""Types never used in training prompts, so that evaluation on them measures transfer."""

ParamValue = int | str | tuple[str, ...]
Checker = Callable[[str, Mapping[str, Any], Lang], bool]
Sampler = Callable[[random.Random, Lang], dict[str, Any]]

# The bundled vocabulary that parameters are sampled from. Keywords and forbidden words are
# disjoint; no phrase contains a comma, a quote or a bracket (the parser's field delimiters).
KEYWORDS = {
    "en": ["garden", "morning", "friend", "window", "music", "river", "coffee", "smile", "journey",
           "bright", "quiet", "summer", "kitchen", "letter", "forest", "color"],
    "zh": ["阳光", "朋友", "花园", "音乐", "微笑", "旅行", "温暖", "希望", "早晨", "窗户", "河流",
           "安静", "夏天", "厨房", "森林", "颜色"],
}  # fmt: skip
FORBIDDEN_WORDS = {
    "en": ["very", "really", "good", "nice", "because", "also", "just", "great", "always", "like"],
    "zh": ["非常", "我们", "但是", "因为", "所以", "真的", "一些", "美丽", "可以", "喜欢"],
}
START_PHRASES = {
    "en": ["Dear friend", "Here is my answer", "Good morning", "Once upon a time", "Let me tell you"],
    "zh": ["亲爱的朋友", "我的回答是", "早上好", "从前", "让我来告诉你"],
}
END_PHRASES = {
    "en": ["Have a nice day.", "That is all.", "Thank you for reading.", "See you soon.",
           "Is there anything else I can help with?"],
    "zh": ["祝你愉快。", "以上就是我的回答。", "谢谢阅读。", "下次再见。", "还有其他问题吗？"],
}  # fmt: skip
JSON_KEYS = ["title", "summary", "mood", "reason", "answer", "name", "place", "time", "tip", "feeling"]
MAX_WORDS = {"en": [20, 30, 40, 50, 60, 80], "zh": [40, 60, 80, 100, 150]}
MIN_WORDS = {"en": [20, 30, 40, 50, 60], "zh": [30, 50, 80, 100, 120]}
"""Word limits; a Chinese "word" is a character (the zh templates say 字), hence larger numbers."""
WORD_GAP = 20
"""max_words and min_words sampled together leave at least this many words between them."""
WORDS_PER_SENTENCE = 25
"""max_sentences with min_words: no more than this many words per allowed sentence."""
WORDS_PER_BLOCK = 10
"""max_words with num_paragraphs or num_bullets: at least this many words per paragraph or bullet."""

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_WORD_CHAR = re.compile(r"[^\W_]")
_SENTENCE_BREAK = re.compile(r"[.!?]+(?=[\s\"'”’)\]]|$)|[。！？]+|\n")
_BLANK_LINE = re.compile(r"\n\s*\n")
_BULLET = re.compile(r"^[ \t]*[-*][ \t]+\S", re.M)
_TITLE = re.compile(r"<<[^<>\n]*[^\W_][^<>\n]*>>")
_PLACEHOLDER = re.compile(r"\[[^\[\]\n]*[^\W_][^\[\]\n]*\]")
_JSON_FENCE = re.compile(r"^```(?:json)?[ \t]*\n(.*)\n[ \t]*```$", re.S | re.I)
_TEXT_FIELD = r"[^\"“”\[\]<>\n]+"

# How each template field is matched, read and shown. Text fields exclude the quotes and
# brackets that delimit them, so one constraint's match never runs into the next sentence.
_FIELDS: dict[str, tuple[str, Callable[[str], ParamValue], Callable[[Any], str]]] = {
    "n": (r"\d+", int, str),
    "word": (_TEXT_FIELD, str, str),
    "phrase": (_TEXT_FIELD, str, str),
    "keys": (
        r'"[a-z_]+"(?:, "[a-z_]+")*',
        lambda text: tuple(re.findall(r'"([a-z_]+)"', text)),
        lambda keys: ", ".join(f'"{key}"' for key in keys),
    ),
}


def count_words(text: str) -> int:
    """Words as the constraints count them: CJK characters one each, other tokens by whitespace."""
    rest = _CJK.sub(" ", text)
    return len(_CJK.findall(text)) + sum(1 for token in rest.split() if _WORD_CHAR.search(token))


def count_sentences(text: str) -> int:
    """Sentences as the constraints count them (see the module docstring)."""
    return sum(1 for piece in _SENTENCE_BREAK.split(text) if _WORD_CHAR.search(piece))


def split_paragraphs(text: str) -> list[str]:
    """The paragraphs of a text: pieces separated by a blank line that have a letter or digit."""
    return [p for p in _BLANK_LINE.split(text.strip()) if _WORD_CHAR.search(p)]


def contains_word(text: str, word: str, lang: Lang) -> bool:
    """English: the whole word, any case; Chinese (no spaces between words): the substring."""
    if lang == "zh":
        return word in text
    return re.search(rf"(?<![^\W_]){re.escape(word)}(?![^\W_])", text, re.I) is not None


@dataclass(frozen=True)
class ConstraintType:
    """One kind of verifiable constraint: how it is asked, checked and sampled."""

    name: str
    templates: dict[Lang, str]
    """The instruction sentence per language it applies to; `{field}`s are the parameters."""
    check: Checker
    """`check(response, params, lang)`: whether a (non-blank) response follows the constraint."""
    sample_params: Sampler
    """`sample_params(rng, lang)`: random parameters in the ranges a small model can follow."""
    conflicts: frozenset[str]
    """Types that can never be asked together with this one (symmetric with theirs)."""

    def fields(self, lang: Lang) -> list[str]:
        return [field for _, field, _, _ in string.Formatter().parse(self.templates[lang]) if field]

    def pattern(self, lang: Lang) -> re.Pattern[str]:
        """The template as a regex with one named group per field."""
        parts = []
        for literal, field, _, _ in string.Formatter().parse(self.templates[lang]):
            parts.append(re.escape(literal))
            if field:
                parts.append(f"(?P<{field}>{_FIELDS[field][0]})")
        return re.compile("".join(parts))


CONSTRAINT_TYPES: dict[str, ConstraintType] = {}


def register(
    name: str,
    *,
    sample: Sampler = lambda rng, lang: {},
    conflicts: tuple[str, ...] = (),
    en: str | None = None,
    zh: str | None = None,
) -> Callable[[Checker], Checker]:
    """Add a constraint type to `CONSTRAINT_TYPES`; the decorated function is its checker."""
    templates: dict[Lang, str] = {lang: t for lang, t in (("en", en), ("zh", zh)) if t is not None}

    def add(check: Checker) -> Checker:
        if name in CONSTRAINT_TYPES:
            raise ValueError(f"constraint type {name!r} is registered twice")
        CONSTRAINT_TYPES[name] = ConstraintType(name, templates, check, sample, frozenset(conflicts))
        return check

    return add


@dataclass(frozen=True)
class Constraint:
    """One constraint of a prompt: its type, parameters (in template order) and language."""

    kind: str
    params: tuple[tuple[str, ParamValue], ...]
    lang: Lang

    @property
    def type(self) -> ConstraintType:
        return CONSTRAINT_TYPES[self.kind]

    def param(self, key: str) -> Any:
        return dict(self.params)[key]

    def instruction(self) -> str:
        """The sentence added to a prompt, in the constraint's language."""
        shown = {key: _FIELDS[key][2](value) for key, value in self.params}
        return self.type.templates[self.lang].format(**shown)

    def check(self, response: str) -> bool:
        """Whether the response follows this constraint (a reply with no letter or digit never does)."""
        if not _WORD_CHAR.search(response):
            return False
        return self.type.check(response, dict(self.params), self.lang)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form of the data files: `{"kind": ..., "params": {...}}` (lists for tuples)."""
        params = {k: list(v) if isinstance(v, tuple) else v for k, v in self.params}
        return {"kind": self.kind, "params": params}


def make_constraint(kind: str, lang: Lang, params: Mapping[str, Any]) -> Constraint:
    """A validated `Constraint`: a known type, a language it has a template for, its exact fields."""
    if kind not in CONSTRAINT_TYPES:
        raise ValueError(f"unknown constraint kind {kind!r}; allowed: {sorted(CONSTRAINT_TYPES)}")
    ctype = CONSTRAINT_TYPES[kind]
    if lang not in ctype.templates:
        raise ValueError(f"constraint {kind!r} has no {lang!r} template; allowed: {sorted(ctype.templates)}")
    fields = ctype.fields(lang)
    if sorted(params) != sorted(fields):
        raise ValueError(f"constraint {kind!r} takes params {fields}, got {sorted(params)}")
    values = {k: tuple(v) if isinstance(v, list | tuple) else v for k, v in params.items()}
    return Constraint(kind, tuple((field, values[field]) for field in fields), lang)


def sample_constraint(rng: random.Random, kind: str, lang: Lang) -> Constraint:
    """A constraint of a kind with random parameters."""
    return make_constraint(kind, lang, CONSTRAINT_TYPES[kind].sample_params(rng, lang))


def parse_constraints(text: str) -> list[Constraint]:
    """The constraints stated in a prompt's text, in the order they appear."""
    found: list[tuple[int, int, Constraint]] = []
    for ctype in CONSTRAINT_TYPES.values():
        for lang in ctype.templates:
            for match in ctype.pattern(lang).finditer(text):
                params = {k: _FIELDS[k][1](v) for k, v in match.groupdict().items()}
                found.append((match.start(), match.end(), make_constraint(ctype.name, lang, params)))
    constraints, end = [], -1
    for start, stop, constraint in sorted(found, key=lambda item: (item[0], -item[1])):
        if start >= end:  # overlapping matches cannot both be sentences of the prompt
            constraints.append(constraint)
            end = stop
    return constraints


def constraints_of(prompt: Messages) -> list[Constraint]:
    """The constraints of a prompt's last user turn (a plain string is itself that turn)."""
    return parse_constraints(last_user_turn(prompt))


def constraint_results(prompt: Messages, response: str) -> list[tuple[Constraint, bool]]:
    """Each constraint of the prompt with whether the response follows it."""
    return [(c, c.check(response)) for c in constraints_of(prompt)]


def follows_all(prompt: Messages, response: str) -> bool | None:
    """Whether the response follows every constraint of the prompt; None when it has none."""
    results = constraint_results(prompt, response)
    return all(ok for _, ok in results) if results else None


def constraint_reward(prompt: Messages, response: str) -> float | None:
    """The share of the prompt's constraints the response follows, in [0, 1]; None without any."""
    results = constraint_results(prompt, response)
    return sum(ok for _, ok in results) / len(results) if results else None


def compatible(a: Constraint, b: Constraint) -> bool:
    """Whether two constraints can be asked together without contradicting each other."""
    if a.kind == b.kind or a.lang != b.lang:
        return False
    if a.kind in b.type.conflicts or b.kind in a.type.conflicts:
        return False
    return not (_params_clash(a, b) or _params_clash(b, a))


def _required_texts(c: Constraint) -> tuple[list[str], list[str]]:
    """The strings a constraint makes the response contain: keywords (in any case), and exact text."""
    params = dict(c.params)
    keywords = [params["word"]] if c.kind == "include_keyword" else []
    exact = [params["phrase"]] if "phrase" in params else []
    return keywords, exact + list(params.get("keys", ()))


def _params_clash(a: Constraint, b: Constraint) -> bool:
    """Contradictions that depend on the parameters, checked from `a`'s side."""
    keywords, exact = _required_texts(b)
    texts = keywords + exact
    if a.kind == "lowercase":
        return any(ch.isupper() for text in texts for ch in text)
    if a.kind == "uppercase":
        return any(ch.islower() for text in exact for ch in text)
    if a.kind == "no_commas":
        return any("," in text or "，" in text for text in texts)
    if a.kind == "forbidden_word":
        return any(contains_word(text, a.param("word"), a.lang) for text in texts)
    if a.kind == "max_words" and b.kind == "min_words":
        return a.param("n") < b.param("n") + WORD_GAP
    if a.kind == "max_words" and b.kind in ("num_paragraphs", "num_bullets"):
        return a.param("n") < WORDS_PER_BLOCK * b.param("n")
    if a.kind == "max_sentences" and b.kind in ("num_paragraphs", "num_bullets"):
        return a.param("n") < b.param("n")
    if a.kind == "max_sentences" and b.kind == "min_words":
        return b.param("n") > WORDS_PER_SENTENCE * a.param("n")
    return False


# --- the types ------------------------------------------------------------------------------------


def _choice(pool: Mapping[Lang, list[Any]], key: str) -> Sampler:
    return lambda rng, lang: {key: rng.choice(pool[lang])}


@register(
    "max_words",
    en="Answer with at most {n} words.",
    zh="回答不超过{n}个字。",
    sample=_choice(MAX_WORDS, "n"),
)
def _max_words(response: str, params: Mapping[str, Any], lang: Lang) -> bool:
    return count_words(response) <= params["n"]


@register(
    "min_words",
    en="Answer with at least {n} words.",
    zh="回答不少于{n}个字。",
    sample=_choice(MIN_WORDS, "n"),
)
def _min_words(response: str, params: Mapping[str, Any], lang: Lang) -> bool:
    return count_words(response) >= params["n"]


@register(
    "max_sentences",
    en="Use at most {n} sentences.",
    zh="回答不超过{n}句话。",
    sample=lambda rng, lang: {"n": rng.randint(2, 5)},
    conflicts=("title", "postscript", "json_keys"),
)
def _max_sentences(response: str, params: Mapping[str, Any], lang: Lang) -> bool:
    return count_sentences(response) <= params["n"]


@register(
    "include_keyword",
    en='Include the word "{word}" in your response.',
    zh="回答中必须包含“{word}”这个词。",
    sample=_choice(KEYWORDS, "word"),
)
def _include_keyword(response: str, params: Mapping[str, Any], lang: Lang) -> bool:
    return contains_word(response, params["word"], lang)


@register(
    "forbidden_word",
    en='Do not use the word "{word}" anywhere in your response.',
    zh="回答中不要出现“{word}”这个词。",
    sample=_choice(FORBIDDEN_WORDS, "word"),
)
def _forbidden_word(response: str, params: Mapping[str, Any], lang: Lang) -> bool:
    return not contains_word(response, params["word"], lang)


@register(
    "num_paragraphs",
    en="Write exactly {n} paragraphs separated by a blank line.",
    zh="回答分成{n}段，段与段之间空一行。",
    sample=lambda rng, lang: {"n": rng.randint(2, 4)},
    conflicts=("num_bullets", "title", "postscript", "json_keys"),
)
def _num_paragraphs(response: str, params: Mapping[str, Any], lang: Lang) -> bool:
    return len(split_paragraphs(response)) == params["n"]


@register(
    "num_bullets",
    en='Answer with exactly {n} bullet points, each on its own line starting with "- ".',
    zh='回答必须恰好包含{n}个要点，每个要点单独一行，以"- "开头。',
    sample=lambda rng, lang: {"n": rng.randint(2, 5)},
    conflicts=("json_keys", "quotation"),
)
def _num_bullets(response: str, params: Mapping[str, Any], lang: Lang) -> bool:
    return len(_BULLET.findall(response)) == params["n"]


@register(
    "title",
    en="Give your response a title wrapped in double angular brackets, such as <<my title>>.",
    zh="给回答加一个标题，用双尖括号括起来，例如<<我的标题>>。",
    conflicts=("json_keys",),
)
def _title(response: str, params: Mapping[str, Any], lang: Lang) -> bool:
    return _TITLE.search(response) is not None


@register(
    "start_phrase",
    en='Start your response with the exact phrase "{phrase}".',
    zh="回答必须以“{phrase}”开头。",
    sample=_choice(START_PHRASES, "phrase"),
    conflicts=("json_keys", "quotation"),
)
def _start_phrase(response: str, params: Mapping[str, Any], lang: Lang) -> bool:
    return response.lstrip().startswith(params["phrase"])


@register(
    "end_phrase",
    en='End your response with the exact phrase "{phrase}" and nothing after it.',
    zh="回答必须以“{phrase}”结尾，后面不要再写任何内容。",
    sample=_choice(END_PHRASES, "phrase"),
    conflicts=("json_keys", "quotation", "postscript"),
)
def _end_phrase(response: str, params: Mapping[str, Any], lang: Lang) -> bool:
    return response.rstrip().endswith(params["phrase"])


@register(
    "lowercase",
    en="Write your entire response in lowercase letters, with no capital letters at all.",
    conflicts=("uppercase", "postscript"),
)
def _lowercase(response: str, params: Mapping[str, Any], lang: Lang) -> bool:
    return not any(ch.isupper() for ch in response) and any(ch.islower() for ch in response)


@register(
    "uppercase",
    en="Write your entire response in capital letters only.",
    conflicts=("json_keys",),
)
def _uppercase(response: str, params: Mapping[str, Any], lang: Lang) -> bool:
    return not any(ch.islower() for ch in response) and any(ch.isupper() for ch in response)


@register(
    "no_commas",
    en="Do not use any commas in your response.",
    zh="回答中不要使用任何逗号。",
    conflicts=("json_keys",),
)
def _no_commas(response: str, params: Mapping[str, Any], lang: Lang) -> bool:
    return "," not in response and "，" not in response


@register(
    "json_keys",
    en="Answer only with a JSON object that has exactly these keys: {keys}.",
    zh="只用一个JSON对象回答，它必须恰好包含这些键：{keys}。",
    sample=lambda rng, lang: {"keys": tuple(rng.sample(JSON_KEYS, rng.randint(2, 3)))},
    conflicts=("min_words", "postscript", "quotation", "response_language"),
)
def _json_keys(response: str, params: Mapping[str, Any], lang: Lang) -> bool:
    text = response.strip()
    fence = _JSON_FENCE.match(text)
    try:
        value = json.loads(fence.group(1) if fence else text)
    except ValueError:
        return False
    return isinstance(value, dict) and set(value) == set(params["keys"])


@register(
    "response_language",
    en="Answer in Chinese, not in English.",
    zh="请用英文回答，不要使用中文。",
    # Only form constraints go with it: words, phrases and markers of the prompt's language would
    # contradict answering in the other one.
    conflicts=("max_words", "min_words", "include_keyword", "forbidden_word", "start_phrase",
               "end_phrase", "lowercase", "uppercase", "json_keys", "postscript"),
)  # fmt: skip
def _response_language(response: str, params: Mapping[str, Any], lang: Lang) -> bool:
    letters = [ch for ch in response if ch.isalpha()]
    cjk = sum(1 for ch in letters if _CJK.match(ch))
    if lang == "en":  # asked for Chinese
        return cjk > 0 and cjk >= 0.5 * len(letters)
    return cjk == 0 and any(ch.isascii() for ch in letters)


@register(
    "quotation",
    en="Wrap your entire response in double quotation marks.",
    zh="把整个回答放在一对双引号里。",
    conflicts=("postscript",),
)
def _quotation(response: str, params: Mapping[str, Any], lang: Lang) -> bool:
    text = response.strip()
    return len(text) >= 2 and (text[0], text[-1]) in (('"', '"'), ("“", "”"))


@register(
    "postscript",
    en="At the end of your response, add a postscript starting with P.S.",
    zh="在回答的最后加一行以“附注：”开头的附言。",
)
def _postscript(response: str, params: Mapping[str, Any], lang: Lang) -> bool:
    last = response.strip().splitlines()[-1].strip()
    marker = r"P\.S\." if lang == "en" else r"附注[：:]"
    return re.match(rf"{marker}\s*[^\W_]", last) is not None


@register(
    "placeholders",
    en="Include at least {n} placeholders in square brackets, such as [name].",
    zh="回答中至少包含{n}个用方括号表示的占位符，例如[地址]。",
    sample=lambda rng, lang: {"n": rng.randint(1, 3)},
)
def _placeholders(response: str, params: Mapping[str, Any], lang: Lang) -> bool:
    return len(_PLACEHOLDER.findall(response)) >= params["n"]


TRAINED_TYPES: tuple[str, ...] = tuple(k for k in CONSTRAINT_TYPES if k not in HELD_OUT_TYPES)
"""Every type that training prompts use."""
