"""lmms-eval task YAMLs shipped with the plugin; installed as ``lmms_topo_plugin.tasks``."""
