"""Built-in layer families. Importing this package registers every built-in Caffe layer type."""
from runner.layers import (convolution, crop, data, elementwise, extra_losses, hdf5, indexing,  # noqa: F401
                           inner_product, losses, lrn, neuron, normalization, parameter, patches, pointwise,
                           pooling, recurrent, reduction, shape, softmax)
