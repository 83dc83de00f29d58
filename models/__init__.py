"""The FCN model zoo: one folder per experiment (net.py, solver.prototxt, generated prototxts, README).

``models.sources`` names each dataset's Python data layer, ``models.experiment`` turns a net
builder and a source into train/test/deploy nets, ``models.make_nets`` regenerates them all.
"""
