"""What PPO carries from one iteration to the next, and all that a checkpoint of it holds.

Policy, critic, their optimizers, the KL coefficient β, every process's random generators and the
iteration count (which is also the position in the prompt order: iteration i trains on batch i of
a seeded permutation, so nothing else about the prompts needs saving).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import torch

from align.checkpoint import CheckpointManager, cpu_copy, rng_state, set_rng_state
from align.ppo.kl_controller import KLController

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"


@dataclass
class PPOState:
    """The trained models (as `accelerator.prepare` returned them) and the loop's counters."""

    policy: torch.nn.Module
    critic: torch.nn.Module | None
    optimizers: list[torch.optim.Optimizer]
    controller: KLController
    iteration: int = 0

    def state_dict(self, accelerator) -> dict | None:
        """A CPU copy of everything; collective (every process's RNG is gathered), so every
        process calls it. The main process gets the dict, the others None."""
        rngs = accelerator.gather_for_metrics([rng_state()], use_gather_object=True)
        if not accelerator.is_main_process:
            return None
        return {
            "iteration": self.iteration,
            "kl_coef": self.controller.value,
            "policy": cpu_copy(accelerator.unwrap_model(self.policy).state_dict()),
            "critic": None
            if self.critic is None
            else cpu_copy(accelerator.unwrap_model(self.critic).state_dict()),
            "optimizers": [cpu_copy(o.state_dict()) for o in self.optimizers],
            "rng": rngs,
        }

    def load_state_dict(self, state: dict, accelerator) -> None:
        """Every process loads the same models, optimizers and β, and its own RNG (a run resumed
        on more processes than it was saved from reuses the last one's)."""
        accelerator.unwrap_model(self.policy).load_state_dict(state["policy"])
        if self.critic is not None:
            accelerator.unwrap_model(self.critic).load_state_dict(state["critic"])
        for optimizer, saved in zip(self.optimizers, state["optimizers"], strict=True):
            optimizer.load_state_dict(saved)
        set_rng_state(state["rng"][min(accelerator.process_index, len(state["rng"]) - 1)])
        self.iteration, self.controller.value = state["iteration"], state["kl_coef"]

    def fingerprint(self, accelerator) -> str:
        """SHA-256 of this process's policy and critic weights: data-parallel ranks must agree."""
        digest = hashlib.sha256()
        for model in (self.policy, self.critic):
            if model is not None:
                for tensor in accelerator.unwrap_model(model).state_dict().values():
                    digest.update(
                        tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
                    )
        return digest.hexdigest()

    def save(self, checkpoints: CheckpointManager, accelerator) -> None:
        """A checkpoint at the current iteration (collective). Its metadata keeps every process's
        weight fingerprint; ranks whose weights differ are logged as an error (their gradients
        were not averaged, and the checkpoint holds only the main process's)."""
        fingerprints = accelerator.gather_for_metrics([self.fingerprint(accelerator)], use_gather_object=True)
        state = self.state_dict(accelerator)
        if state is None:
            return
        if len(set(fingerprints)) > 1:
            log.error("the processes' weights differ at iteration %d: %s", self.iteration, fingerprints)
        meta = {
            "iteration": self.iteration,
            "prompt_position": self.iteration,
            "rank_fingerprints": fingerprints,
        }
        checkpoints.save(
            self.iteration, lambda directory: torch.save(state, directory / STATE_FILE), meta, blocking=True
        )

    def resume(self, checkpoints: CheckpointManager, accelerator) -> bool:
        """Load the latest checkpoint, if there is one; whether there was."""
        latest = checkpoints.latest()
        if latest is None:
            return False
        self.load_state_dict(torch.load(latest / STATE_FILE, weights_only=False), accelerator)
        log.info("resumed from %s at iteration %d", latest, self.iteration)
        return True
