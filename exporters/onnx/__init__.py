"""ONNX build of a (pruned) VLM in the Hugging Face three-graph layout, and an ONNX Runtime runner for it.

``build_onnx(loaded, onnx_dir)`` writes ``vision_encoder.onnx``, ``embed_tokens.onnx`` and
``decoder_model_merged.onnx`` (with KV cache) plus ``manifest.json``, exported with
``torch.onnx.export(dynamo=True)``; :class:`~lmms_topo_plugin.runtime.onnx_runner.OnnxVLM` runs them.
"""
