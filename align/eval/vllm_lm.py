"""An lm-evaluation-harness `LM` over an in-process vLLM engine.

Multiple choice whose answers differ only in their last token (A/B/C/D) costs a next-token
request or two per question that return the log-probs of exactly the answer tokens; other
answers are scored from prompt log-probs. Generation is greedy with the task's stop strings. Tokenisation goes through lm-eval's `TemplateLM`, exactly as its `hf` model does, so
scores match lm-eval's HF path on the same checkpoint and files.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from lm_eval.api.model import TemplateLM

log = logging.getLogger(__name__)


class VLLMEngineLM(TemplateLM):
    """lm-eval model backed by a `vllm.LLM` (created here from a checkpoint, or one passed in)."""

    def __init__(self, llm: Any, max_gen_toks: int | None = None) -> None:
        super().__init__()
        self.llm = llm
        self.tokenizer = llm.get_tokenizer()
        self.max_length = llm.llm_engine.model_config.max_model_len
        self.max_gen_toks = max_gen_toks
        """Cap on new tokens per generation (None: the task's `max_gen_toks`, 256 if unset)."""
        self.engine: Any = None

    @classmethod
    def from_checkpoint(cls, path: str, max_model_len: int | None = None, seed: int = 0) -> VLLMEngineLM:
        """Start an in-process engine (the rollouts' `VLLMEngine`: float32, eager, 1 GiB KV cache)."""
        from rollouts.vllm_engine import VLLMEngine

        if max_model_len is None:
            config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
            max_model_len = int(config.get("max_position_embeddings", 2048))
        engine = VLLMEngine(path, max_model_len=max_model_len, seed=seed)
        lm = cls(engine.llm)
        lm.engine = engine
        return lm

    def close(self) -> None:
        """Stop the engine this adapter started (an engine passed in is left to its owner)."""
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        # Same choice as lm-eval's HFLM: BOS when the tokenizer has one, else EOS.
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        if add_special_tokens is None:
            return self.tokenizer.encode(string)
        return self.tokenizer.encode(string, add_special_tokens=add_special_tokens)

    def _loglikelihood_tokens(self, requests: list, disable_tqdm: bool = False, **kwargs: Any) -> list:
        # Choices that differ only in their last token (" A", " B", ... after a shared " ") are scored
        # with a few next-token requests per question that return exactly the needed tokens'
        # log-probs; other continuations from prompt log-probs (a full pass per choice).
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (_, context_enc, _) in enumerate(requests):
            groups.setdefault(tuple(context_enc), []).append(i)
        stepwise, longer = {}, []
        for context, indices in groups.items():
            continuations = [requests[i][2] for i in indices]
            shared = continuations[0][:-1]
            if all(c[:-1] == shared and len(c) == len(shared) + 1 for c in continuations) and (
                len(context) + len(shared) < self.max_length
            ):
                stepwise[context] = indices
            else:
                longer.extend(indices)
        self._score_stepwise(requests, stepwise, results, disable_tqdm)
        self._score_continuations(requests, longer, results, disable_tqdm)
        for (key, _, _), result in zip(requests, results, strict=True):
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, result)
        return results

    def _score_stepwise(self, requests: list, groups: dict, results: list, disable_tqdm: bool) -> None:
        from vllm import SamplingParams

        prompts, params, steps = [], [], []
        for context, indices in groups.items():
            shared = requests[indices[0]][2][:-1]
            for k in range(len(shared) + 1):
                wanted = [shared[k]] if k < len(shared) else sorted({requests[i][2][-1] for i in indices})
                prompts.append({"prompt_token_ids": [*context, *shared[:k]]})
                params.append(
                    SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=wanted, detokenize=False)
                )
                steps.append((context, k))
        if not prompts:
            return
        outputs = self.llm.generate(prompts, params, use_tqdm=not disable_tqdm)
        step_output = {step: output.outputs[0] for step, output in zip(steps, outputs, strict=True)}
        for context, indices in groups.items():
            shared = requests[indices[0]][2][:-1]
            prefix_logprob, prefix_greedy = 0.0, True
            for k, token in enumerate(shared):
                completion = step_output[context, k]
                prefix_logprob += completion.logprobs[0][token].logprob
                prefix_greedy = prefix_greedy and completion.token_ids[0] == token
            last = step_output[context, len(shared)]
            for i in indices:
                token = requests[i][2][-1]
                greedy = prefix_greedy and last.token_ids[0] == token
                results[i] = (prefix_logprob + last.logprobs[0][token].logprob, greedy)

    def _score_continuations(
        self, requests: list, indices: list[int], results: list, disable_tqdm: bool
    ) -> None:
        from vllm import SamplingParams

        if not indices:
            return
        prompts, spans = [], []
        for i in indices:
            _, context_enc, continuation_enc = requests[i]
            # One slot stays free for the single token vLLM must generate (HF keeps max_length).
            whole = (context_enc + continuation_enc)[-(self.max_length - 1) :]
            prompts.append({"prompt_token_ids": whole})
            spans.append((len(whole) - len(continuation_enc), whole))
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1, detokenize=False)
        outputs = self.llm.generate(prompts, params, use_tqdm=not disable_tqdm)
        for i, (start, whole), output in zip(indices, spans, outputs, strict=True):
            logprob, greedy = 0.0, True
            for position in range(start, len(whole)):
                entry = output.prompt_logprobs[position][whole[position]]
                logprob += entry.logprob
                greedy = greedy and entry.rank == 1
            results[i] = (logprob, greedy)

    def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list[float]:
        pairs = [((None, None), [self.prefix_token_id], self.tok_encode(req.args[0])) for req in requests]
        return [logprob for logprob, _ in self._loglikelihood_tokens(pairs, disable_tqdm)]

    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        from vllm import SamplingParams

        prompts, params, stops = [], [], []
        eos = self.tokenizer.decode([self.eot_token_id])
        for request in requests:
            context, gen_kwargs = request.args
            kwargs = dict(gen_kwargs)
            until = kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            max_gen_toks = int(kwargs.pop("max_gen_toks", 256))
            max_gen_toks = min(max_gen_toks, self.max_gen_toks or max_gen_toks)
            # A cap as long as the context (HumanEval's 1024 new tokens on a 512-token model) would
            # leave the prompt no room: lm-eval's `hf` model refuses such a run; here half is kept.
            max_gen_toks = min(max_gen_toks, self.max_length // 2)
            temperature = float(kwargs.pop("temperature", 0.0)) if kwargs.pop("do_sample", False) else 0.0
            ids = self.tok_encode(context)[-(self.max_length - max_gen_toks) :]
            prompts.append({"prompt_token_ids": ids})
            params.append(SamplingParams(max_tokens=max_gen_toks, temperature=temperature, stop=until))
            stops.append([*until, eos])
        outputs = self.llm.generate(prompts, params, use_tqdm=not disable_tqdm)
        texts = []
        for request, output, until in zip(requests, outputs, stops, strict=True):
            text = output.outputs[0].text
            for stop in until:
                text = text.split(stop)[0]
            texts.append(text)
            self.cache_hook.add_partial("generate_until", request.args, text)
        return texts
