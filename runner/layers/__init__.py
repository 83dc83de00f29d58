"""Built-in layer families. Importing this package registers every built-in Caffe layer type."""
from runner.layers import (convolution, crop, data, elementwise, hdf5, inner_product, losses, lrn,  # noqa: F401
                           neuron, normalization, pooling, shape, softmax)
