"""Training Caffe nets exactly as Caffe's solvers do (pycaffe names in ``solvers.api``).

parameters: solver.prototxt and the nets it names; lr_policy: learning rates; updates: the update
rules on tensors; learnable: which blobs are learned, in Caffe's order; snapshot: solverstate files;
solver: the Solver itself.
"""
