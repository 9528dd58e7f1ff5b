"""Model-card templates; installed as ``lmms_topo_plugin.model_cards``."""
