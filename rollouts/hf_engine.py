"""The `transformers.generate` reference engine: parity tests, and machines without vLLM.

Log-probs are the sampler's processed ones (temperature, top-k and top-p applied, renormalised),
which is what the vLLM engines return too, so trainer/engine mismatch means the same everywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rollouts.base import Rollout, Sampling

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)


class HFEngine:
    """Generates with `model.generate` on a transformers model held in this process."""

    def __init__(
        self,
        model: str | Path | PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase | None = None,
        batch_size: int = 256,
    ) -> None:
        """`model` is a loaded causal LM (the trainer's, shared) or a `save_pretrained` directory."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if isinstance(model, str | Path):
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(str(model))
            model = AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32)
            # A model it loads itself goes where the trainer's would: the GPU when there is one.
            model.to("cuda" if torch.cuda.is_available() else "cpu")
        if tokenizer is None:
            raise ValueError("HFEngine: pass the tokenizer along with a loaded model")
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def generate(self, prompts: Sequence[str | list[int]], sampling: Sampling) -> list[Rollout]:
        """Complete each prompt `sampling.n` times; rollouts grouped by prompt in prompt order."""
        import torch

        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        encoded = [p if isinstance(p, list) else self.tokenizer(p).input_ids for p in prompts]
        jobs = [(i, ids) for i, ids in enumerate(encoded) for _ in range(sampling.n)]
        rollouts: list[Rollout] = []
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(jobs), self.batch_size):
                rollouts += self._generate_batch(jobs[start : start + self.batch_size], sampling)
        finally:
            self.model.train(was_training)
        return rollouts

    def _generate_batch(self, jobs: list[tuple[int, list[int]]], sampling: Sampling) -> list[Rollout]:
        import torch

        width = max(len(ids) for _, ids in jobs)
        device = next(self.model.parameters()).device
        input_ids = torch.tensor([[self.pad_id] * (width - len(ids)) + ids for _, ids in jobs], device=device)
        attention_mask = torch.tensor(
            [[0] * (width - len(ids)) + [1] * len(ids) for _, ids in jobs], device=device
        )
        stops = [self.tokenizer.eos_token_id, *sampling.stop_token_ids]
        greedy = sampling.temperature == 0
        with torch.no_grad():
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                max_new_tokens=sampling.max_new_tokens,
                do_sample=not greedy,
                temperature=None if greedy else sampling.temperature,
                top_p=None if greedy else sampling.top_p,
                top_k=None if greedy else sampling.top_k,
                eos_token_id=stops,
                pad_token_id=self.pad_id,
                output_scores=sampling.logprobs,
                return_dict_in_generate=True,
            )
        new = out.sequences[:, width:]
        token_logprobs = None
        if sampling.logprobs:
            scores = torch.stack(out.scores, dim=1).float().log_softmax(-1)
            token_logprobs = scores.gather(-1, new.unsqueeze(-1)).squeeze(-1)
        rollouts = []
        for row, (index, prompt_ids) in enumerate(jobs):
            ids = new[row].tolist()
            end = next((k + 1 for k, t in enumerate(ids) if t in stops), None)
            ids = ids[:end] if end is not None else ids
            rollouts.append(
                Rollout(
                    prompt_index=index,
                    prompt_token_ids=list(prompt_ids),
                    token_ids=ids,
                    text=self.tokenizer.decode(ids, skip_special_tokens=True),
                    logprobs=None if token_logprobs is None else token_logprobs[row, : len(ids)].tolist(),
                    finish_reason="stop" if end is not None else "length",
                )
            )
        return rollouts

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy the given parameters (HF names) into the engine's model."""
        import torch

        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, tensor in named_tensors:
                params[name].copy_(tensor)

    def close(self) -> None:
        """Nothing to release: the model belongs to whoever passed it."""
