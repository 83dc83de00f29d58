"""Python data layers for the FCN datasets in their real on-disk formats, and synthetic stand-ins.

Layers (module.class, for a prototxt's python_param):
  data_layers.voc.VOCSegDataLayer, data_layers.voc.SBDDSegDataLayer,
  data_layers.nyud.NYUDSegDataLayer, data_layers.siftflow.SIFTFlowSegDataLayer,
  data_layers.pascalcontext.PASCALContextSegDataLayer.
Shared param_str keys are described in ``data_layers.base``; ``data_layers.synthetic.write_dataset``
writes any of the formats; ``data_layers.bench`` measures throughput.
"""
