"""The training side: configs, models, checkpoints, corpus, pretraining, SFT, PPO, evaluation, CLI."""
