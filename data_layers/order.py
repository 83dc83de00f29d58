"""Which sample comes next: file order for evaluation, seeded shuffles for training, sharded by rank.

Shuffling is per epoch (every sample once per pass, in a fresh seeded permutation) rather than the
release's independent draws with replacement: same randomness for SGD, no sample starved for an epoch,
and the sequence is reproducible from the seed. A stream can start anywhere (``start``), which is how a
resumed run picks up where its snapshot left off, even mid-epoch.
"""
from typing import Any, Dict, Iterator, List, Sequence, Tuple

import numpy as np

from data_layers.params import integer

MAX_WORLD_SIZE = 4096


def process_shard(params: Dict[str, Any], phase: int, where: str) -> Tuple[int, int]:
    """(rank, world_size) for this layer: the ``param_str`` keys when given; otherwise, for a training
    net inside a torch.distributed run (torchrun), this process's rank, so that each rank reads its own
    shard of the same prototxt. Evaluation nets read the whole split (rank 0 scores alone)."""
    if "rank" in params or "world_size" in params:
        world_size = integer(params, "world_size", 1, 1, MAX_WORLD_SIZE, where)
        return integer(params, "rank", 0, 0, world_size - 1, where), world_size
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


def sample_order(ids: Sequence[str], randomize: bool, rng: np.random.Generator, start: int = 0) -> Iterator[str]:
    """An endless stream of ids: cycles in file order, or one permutation per epoch drawn from ``rng``;
    from the ``start``-th id of that stream on (earlier epochs' permutations are drawn and dropped)."""
    epoch, offset = divmod(start, len(ids))
    for _ in range(epoch if randomize else 0):
        rng.permutation(len(ids))
    while True:
        order = rng.permutation(len(ids)) if randomize else range(len(ids))
        for index in order[offset:]:
            yield ids[index]
        offset = 0
