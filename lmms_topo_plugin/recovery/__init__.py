"""Recovery after pruning (``recover=kd``): distil the pruned model from the dense one on the dense model's own answers.

- :mod:`.data`: the prompts (the bundled training generator's stream, never calib/dev/test; or ``calib_task=``),
  with a few held out;
- :mod:`.teacher`: the dense model's greedy answers and its top-k next-token distributions on them (cached);
- :mod:`.sequences`: prompt + answer batches and the logits at the answer positions (token pruner attached or not);
- :mod:`.loss`: KL(teacher ‖ student) per answer token;
- :mod:`.train`: LoRA (PEFT, merged after training) or full training, data-parallel under several processes;
- :mod:`.run`: :func:`~.run.teach` before the plan is applied and :func:`~.run.recover` after it, the cache of
  recovered weights and the :class:`~.run.RecoveryRecord` the report, the pruning record and the card read;
- :mod:`.plots`: the training loss curve of the report.

Nothing here imports PEFT until LoRA is attached.
"""
