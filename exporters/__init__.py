"""Exporters for pruned models (checkpoint, ONNX, Hub); installed as ``lmms_topo_plugin.exporters``."""
