"""Caffe's command-line tools under their own names (``upgrade_net_proto_text`` ...), as console scripts."""
