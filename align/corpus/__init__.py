"""The data side of the seed's recipe (InternLM report, section 2.1): language id, rule filters,
a model-based quality filter, near-duplicate and paragraph dedup on datatrove, then the BPE
vocabulary. Entry points: `pipeline.run_corpus`, `quality.train_quality`, `tokenizer.run_tokenizer`."""
