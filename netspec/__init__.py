"""Caffe's formats (caffe.proto, prototxt, caffemodel, V1 upgrade), net filtering and the NetSpec DSL."""
