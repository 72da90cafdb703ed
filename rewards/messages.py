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
