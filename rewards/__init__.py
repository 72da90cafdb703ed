"""Preferences and rewards: the reward model, its training, the preference store and the labelling app.

`rewards.score` is imported lazily (it needs torch) so that `import rewards` stays light.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "score":
        from rewards.model import score

        return score
    raise AttributeError(f"module 'rewards' has no attribute {name!r}")
