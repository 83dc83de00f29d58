"""Run Caffe nets on PyTorch behind the pycaffe API."""
