"""A short data-parallel training run for the multi-process test: each rank writes its final weights."""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from align.distributed import make_accelerator
from align.models import load_model


def main(model_dir: str, out_dir: str) -> None:
    accelerator = make_accelerator()
    torch.manual_seed(0)
    model = load_model(model_dir)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    data = torch.randint(
        5, 2000, (8 * accelerator.num_processes, 32), generator=torch.Generator().manual_seed(1)
    )
    shard = data[accelerator.process_index :: accelerator.num_processes]
    model, optimizer = accelerator.prepare(model, optimizer)
    for step in range(4):
        batch = shard[step * 2 : step * 2 + 2]
        loss = model(input_ids=batch, labels=batch).loss
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
    weights = {k: v.detach().contiguous() for k, v in accelerator.unwrap_model(model).state_dict().items()}
    weights.pop("lm_head.weight", None)  # tied to the embedding
    rank, world = accelerator.process_index, accelerator.num_processes
    save_file(weights, str(Path(out_dir) / f"rank{rank}-of-{world}.safetensors"))


if __name__ == "__main__":
    main(*sys.argv[1:])
