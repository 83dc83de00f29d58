"""Built-in layer families. Importing this package registers every built-in Caffe layer type."""
