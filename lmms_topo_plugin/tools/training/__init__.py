"""Training recipe of the embedded default model: a small LLaVA trained on the synthetic benchmark's stream.

`python -m lmms_topo_plugin.tools.training --out DIR` trains it (two stages, fixed seed) and saves model + processor;
`python -m lmms_topo_plugin.tools.training.evaluate DIR` scores a saved model on the test split, per question kind.
"""

