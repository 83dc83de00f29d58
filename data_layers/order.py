"""Which sample comes next: file order for evaluation, seeded shuffles for training, sharded by rank.

Shuffling is per epoch (every sample once per pass, in a fresh seeded permutation) rather than the
release's independent draws with replacement: same randomness for SGD, no sample starved for an epoch,
and the sequence is reproducible from the seed.
"""
from typing import Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np


def process_shard(params: Mapping[str, object], phase: int) -> Tuple[int, int]:
    """(rank, world_size) for this layer: the ``param_str`` keys when given; otherwise, for a training
    net inside a torch.distributed run (torchrun), this process's rank, so that each rank reads its own
    shard of the same prototxt. Evaluation nets read the whole split (rank 0 scores alone)."""
    if "rank" in params or "world_size" in params:
        return int(params.get("rank", 0)), int(params.get("world_size", 1))
    import torch.distributed as dist
    if phase == 0 and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(ids: Sequence[str], rank: int, world_size: int) -> List[str]:
    """This process's share of ``ids`` for a run over ``world_size`` processes (every world_size-th)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if len(ids) < world_size:  # some rank would get nothing and stall the others at every step
        raise ValueError(f"split has {len(ids)} samples, too few for {world_size} processes")
    return list(ids[rank::world_size])


def sample_order(ids: Sequence[str], randomize: bool, seed: Optional[int]) -> Iterator[str]:
    """An endless stream of ids: cycles in file order, or one seeded permutation per epoch."""
    rng = np.random.default_rng(seed)
    while True:
        if randomize:
            for index in rng.permutation(len(ids)):
                yield ids[index]
        else:
            yield from ids
