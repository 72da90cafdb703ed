"""A prompt as the judges see it: a chat (a list of role/content turns) or a plain user string."""

from __future__ import annotations

from collections.abc import Sequence

Messages = Sequence[dict[str, str]] | str


def last_user_turn(prompt: Messages) -> str:
    """The text of the last user message (a plain-string prompt is itself the user's turn)."""
    if isinstance(prompt, str):
        return prompt
    for message in reversed(prompt):
        if message.get("role") == "user":
            return message.get("content", "")
    return ""


CHAT_ROLES = ("system", "user", "assistant")
"""The roles of a chat turn every reader accepts (what the chat templates render)."""


def turns_problem(turns: object, roles: Sequence[str] = CHAT_ROLES) -> str | None:
    """What is wrong with a list of chat turns, or None: it must be non-empty, and each turn a
    mapping with a `role` in `roles` and non-blank string `content`."""
    if not isinstance(turns, list) or not turns:
        return "must be a non-empty list of {role, content} turns"
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or turn.get("role") not in roles:
            return f"turn {i}: role must be one of {', '.join(roles)}"
        content = turn.get("content")
        if not isinstance(content, str) or not content.strip():
            return f"turn {i}: empty or missing 'content'"
    return None


def prompt_problem(prompt: object) -> str | None:
    """What is wrong with a prompt (non-blank user text, or chat turns ending in a user turn)."""
    if isinstance(prompt, str):
        return None if prompt.strip() else "the prompt is empty"
    problem = turns_problem(prompt)
    if problem is None and prompt[-1]["role"] != "user":  # type: ignore[index]
        problem = "the prompt must end with a user turn"
    return problem
