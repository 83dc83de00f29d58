"""Built-in layer families. Importing this package registers every built-in Caffe layer type."""
from runner.layers import (convolution, crop, data, db_data, elementwise, extra_losses, hdf5,  # noqa: F401
                           image_data, indexing, inner_product, losses, lrn, memory_data, neuron, normalization,
                           parameter, patches, pointwise, pooling, recurrent, reduction, shape, softmax,
                           window_data)
