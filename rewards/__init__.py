"""Preferences and rewards: the reward model, its training, the preference store and the labelling app."""
