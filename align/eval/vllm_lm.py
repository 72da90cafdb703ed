"""An lm-evaluation-harness `LM` over an in-process vLLM engine.

Multiple choice with one-token answers (A/B/C/D) costs one next-token request per question that
returns the log-probs of exactly the answer tokens; longer answers are scored from prompt
log-probs. Generation is greedy with the task's stop strings. Tokenisation goes through lm-eval's `TemplateLM`, exactly as its `hf` model does, so
scores match lm-eval's HF path on the same checkpoint and files.
"""

from __future__ import annotations

import logging
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

    @classmethod
    def from_checkpoint(cls, path: str, max_model_len: int | None = None, seed: int = 0) -> VLLMEngineLM:
        """Start an engine for an HF checkpoint directory (float32, eager: CPU-friendly)."""
        from vllm import LLM

        llm = LLM(model=path, dtype="float32", max_model_len=max_model_len, enforce_eager=True, seed=seed)
        return cls(llm)

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
        # One-token answers (choice letters) sharing a context are scored by a single next-token
        # request that asks for exactly those tokens' log-probs; longer answers from prompt log-probs.
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        by_context: dict[tuple[int, ...], list[int]] = {}
        longer = []
        for i, (_, context_enc, continuation_enc) in enumerate(requests):
            if len(continuation_enc) == 1 and len(context_enc) < self.max_length:
                by_context.setdefault(tuple(context_enc), []).append(i)
            else:
                longer.append(i)
        self._score_next_tokens(requests, by_context, results, disable_tqdm)
        self._score_continuations(requests, longer, results, disable_tqdm)
        for (key, _, _), result in zip(requests, results, strict=True):
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, result)
        return results

    def _score_next_tokens(self, requests: list, by_context: dict, results: list, disable_tqdm: bool) -> None:
        from vllm import SamplingParams

        if not by_context:
            return
        prompts, params = [], []
        for context, indices in by_context.items():
            tokens = sorted({requests[i][2][0] for i in indices})
            prompts.append({"prompt_token_ids": list(context)})
            params.append(
                SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=tokens, detokenize=False)
            )
        outputs = self.llm.generate(prompts, params, use_tqdm=not disable_tqdm)
        for indices, output in zip(by_context.values(), outputs, strict=True):
            completion = output.outputs[0]
            greedy_token = completion.token_ids[0]
            for i in indices:
                token = requests[i][2][0]
                results[i] = (completion.logprobs[0][token].logprob, token == greedy_token)

    def _score_continuations(
        self, requests: list, indices: list[int], results: list, disable_tqdm: bool
    ) -> None:
        from vllm import SamplingParams

        if not indices:
            return
        prompts, spans = [], []
        for i in indices:
            _, context_enc, continuation_enc = requests[i]
            whole = (context_enc + continuation_enc)[-self.max_length :]
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
