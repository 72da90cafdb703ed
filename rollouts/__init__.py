"""Generation engines for rollouts (vLLM in-process, a vLLM server, transformers): the ground floor."""
