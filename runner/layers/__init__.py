"""Built-in layer families. Importing this package registers every built-in Caffe layer type."""
from runner.layers import (convolution, crop, data, db_data, elementwise, image_data, inner_product,  # noqa: F401
                           losses, lrn, memory_data, neuron, normalization, pooling, shape, softmax, window_data)
