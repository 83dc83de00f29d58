"""Batch size and momentum for whole-image FCN training (the FCN paper, Section 4.2 / Table 2).

SGD with momentum ``p`` and batch ``k`` weights a gradient seen ``n`` updates ago by ``p**n``; measured
in images instead of updates that is ``p**(i/k)``. Keeping that per-image decay when moving to batch
``k'`` gives ``p' = p**(k'/k)``: momentum 0.9 at batch 20 is momentum ~0.995 at batch 1, which is why
the paper's "heavy" learning (batch 1, momentum 0.99) matches accumulated batches at lower memory.

The three recipes of Table 2 are SolverParameter messages holding only the fields they set; merge one
into a solver (``solver.MergeFrom(fcn_heavy())``). A batch is ``iter_size`` accumulated single images,
as in the release (its data layers deliver one image per forward).
"""
from netspec import caffe_pb2


def equivalent_momentum(momentum: float, batch: int, new_batch: int) -> float:
    """The momentum at batch ``new_batch`` with the per-image decay of ``momentum`` at ``batch``."""
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    if batch < 1 or new_batch < 1:
        raise ValueError(f"batch sizes must be >= 1, got {batch} and {new_batch}")
    return momentum ** (new_batch / batch)


def _recipe(batch: int, momentum: float) -> caffe_pb2.SolverParameter:
    edits = caffe_pb2.SolverParameter()
    edits.iter_size = batch
    edits.momentum = momentum
    return edits


def fcn_accum() -> caffe_pb2.SolverParameter:
    """Table 2's FCN-accum: batch 20 (accumulated), momentum 0.9."""
    return _recipe(20, 0.9)


def fcn_online() -> caffe_pb2.SolverParameter:
    """Table 2's FCN-online: batch 1, momentum 0.9 (less smoothing than FCN-accum per image)."""
    return _recipe(1, 0.9)


def fcn_heavy() -> caffe_pb2.SolverParameter:
    """Table 2's FCN-heavy: batch 1, momentum 0.99 (about FCN-accum's per-image momentum)."""
    return _recipe(1, 0.99)
