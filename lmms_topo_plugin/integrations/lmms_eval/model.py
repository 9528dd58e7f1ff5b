"""The lmms-eval model ``topo_pruned``: load a VLM, prune it inline, answer lmms-eval's requests.

Two classes share everything but the request layout: :class:`TopoPrunedChat` (lmms-eval passes a
``doc_to_messages`` callable) and :class:`TopoPrunedSimple` (``--force_simple``: context text plus a
``doc_to_visual`` callable). The model lives in ``self.loaded`` (not an ``nn.Module`` attribute), so
lmms-eval's ``clean()`` after a run leaves it usable. Every failure inside the plugin (bad ``model_args``, a model
that does not load, NaN during calibration, out of memory, an exception while answering requests) ends the
process with one line on stderr and a non-zero exit code (:mod:`lmms_topo_plugin.failures`), because lmms-eval's
CLI reports ordinary exceptions and still exits 0.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from loguru import logger
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from tqdm.auto import tqdm

from lmms_topo_plugin.records import token_record_of
from lmms_topo_plugin.api import load_pruned
from lmms_topo_plugin.integrations.lmms_eval.compat import install_loglikelihood_fix
from lmms_topo_plugin.integrations.lmms_eval.output import results_directory
from lmms_topo_plugin.config.prune import PruneConfig
from lmms_topo_plugin.distributed import is_distributed, join_launched_processes
from lmms_topo_plugin.failures import exit_on_failure
from lmms_topo_plugin.models.loading import LoadedModel
from lmms_topo_plugin.runtime.backends import OnnxBackend, TorchBackend, onnx_provider
from lmms_topo_plugin.runtime.generation import generation_settings
from lmms_topo_plugin.models.prompting import Prompt
from lmms_topo_plugin.reports import report_directory, write_report

MAX_ROUNDS = 64
CLI_OVERRIDABLE = ("batch_size", "device")  # lmms-eval's own flags that map onto model_args

# lmms-eval imports this module when --model topo_pruned is chosen (and the sweep before it builds a model): the one
# place where the plugin patches lmms-eval (:mod:`.compat`), before any request is answered
install_loglikelihood_fix()


def recorded_token_pruner(loaded: LoadedModel, config: PruneConfig | None = None):
    """The visual-token pruner ``config`` asks for (a sweep's configuration around the dense model) or else the
    one the model's pruning record states (asked for at load, or saved with the checkpoint)."""
    from lmms_topo_plugin.tokens import token_pruner

    record = config.token_pruning if config is not None and config.tokens is not None else (
        token_record_of(loaded.model.config))
    if record:
        step_2 = (f"; from layer {record['ssr_layer']} on: {record['ssr_mode']}"
                  if record.get("ssr_mode") not in (None, "off") else "")
        logger.info(f"topo_pruned: visual-token pruning {record['method']}: keep {record['keep']:g} of the visual "
                    f"tokens from decoder layer {record['layer']} on (prefill){step_2}")
    return token_pruner(record)


class _TopoPrunedBase(lmms):
    show_progress = True  # per-request progress bars (the sweep turns them off: it shows one over configurations)

    def __init__(self, **model_args: Any) -> None:
        super().__init__()
        with exit_on_failure("preparing the model"):
            self.config = PruneConfig.from_model_args(model_args)
            self._configure_processes()
            if self.config.evaluation.backend == "onnxruntime":
                self.backend = OnnxBackend(self.config.load.pretrained, onnx_provider(self.config.load.device),
                                           self.config.evaluation.onnx_precision)
                self.loaded, self.report = None, None
                return
            self.loaded, self.report = load_pruned(self.config)
            self.backend = TorchBackend(self.loaded, self.config.evaluation.use_cache, recorded_token_pruner(self.loaded))
            if self.rank == 0:
                for path in write_report(self.report, report_directory(self.config.run.report_dir,
                                                                      results_directory(self.config.load.pretrained))):
                    logger.info(f"topo_pruned: wrote {path}")

    @classmethod
    def around(cls, loaded: LoadedModel, config: PruneConfig, *, show_progress: bool = True) -> "_TopoPrunedBase":
        """The lmms-eval model over an already loaded (possibly pruned) model, for in-process ``simple_evaluate``.

        Nothing is loaded or pruned: the sweep builds one around each configuration of the model it holds; a
        ``token_method`` in ``config`` is attached to every request, as a loaded pruned model's record would be.
        Under ``torchrun``/``accelerate launch`` it takes this process's rank, so evaluation is data-parallel.
        """
        model = cls.__new__(cls)
        lmms.__init__(model)
        model.config, model.loaded, model.report = config, loaded, None
        model.backend = TorchBackend(loaded, config.evaluation.use_cache, recorded_token_pruner(loaded, config))
        model.show_progress = show_progress
        model._take_rank()
        return model

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None):
        """``model_args`` win over lmms-eval's ``--batch_size``/``--device`` (which it always passes)."""
        from lmms_eval.utils import simple_parse_args_string

        with exit_on_failure("parsing model_args"):
            model_args = simple_parse_args_string(arg_string)
        for key in CLI_OVERRIDABLE:
            value = (additional_config or {}).get(key)
            if value is not None and key not in model_args:
                model_args[key] = value
        return cls(**model_args)

    def _configure_processes(self) -> None:
        """Under ``accelerate launch``/``torchrun``: one model per process, on this process's GPU if any."""
        device = join_launched_processes()
        if device and not self.config.load.device_map:
            self.config = self.config.with_values(device=device)
        self._take_rank()

    def _take_rank(self) -> None:
        """This process's rank and the world size, and the accelerator lmms-eval gathers results with."""
        if not is_distributed():
            return
        import torch.distributed as dist
        from accelerate import Accelerator

        self.accelerator = Accelerator()
        self._rank, self._world_size = dist.get_rank(), dist.get_world_size()

    @property
    def model(self):
        """The transformers model (``None`` with ``backend=onnxruntime``)."""
        return self.loaded.model if self.loaded is not None else None

    @property
    def device(self):
        return self.backend.device

    @property
    def hide_progress(self) -> bool:
        return self.rank != 0 or not self.show_progress

    @property
    def batch_size(self) -> int:
        return self.config.evaluation.batch_size

    # --- request layouts -------------------------------------------------------------------------
    def _prompt_for(self, args: tuple) -> tuple[Prompt, dict]:
        raise NotImplementedError

    def _round_prompt(self, args: tuple, doc: dict, round_idx: int, outputs: list[str], info: Any):
        raise NotImplementedError

    def _doc(self, task: str, split: str, doc_id: int) -> dict:
        return self.task_dict[task][split][doc_id]

    # --- lmms-eval API ---------------------------------------------------------------------------
    def generate_until(self, requests: list[Instance]) -> list[str]:
        with exit_on_failure("generate_until"):
            return self._generate_until(requests)

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        """``(negative log-likelihood, is_greedy)`` per request: lmms-eval ranks choices by the smallest."""
        with exit_on_failure("loglikelihood"):
            return self._loglikelihood(requests)

    def generate_until_multi_round(self, requests: list[Instance]) -> list[list[str]]:
        """Each round is a fresh prompt built by the task from the previous rounds' outputs."""
        with exit_on_failure("generate_until_multi_round"):
            return self._generate_until_multi_round(requests)

    def _generate_until(self, requests: list[Instance]) -> list[str]:
        prompts, kwargs = zip(*(self._prompt_for(request.args) for request in requests)) if requests else ((), ())
        results: list[str | None] = [None] * len(requests)
        order = sorted(range(len(requests)), key=lambda i: json.dumps(kwargs[i], sort_keys=True, default=str))
        batches = _batches(order, key=lambda i: json.dumps(kwargs[i], sort_keys=True, default=str), size=self.batch_size)
        with tqdm(total=len(requests), desc="topo_pruned generating", disable=self.hide_progress) as bar:
            for batch in batches:
                settings, until = generation_settings(kwargs[batch[0]], self.config.evaluation.max_new_tokens)
                texts = self.backend.generate([prompts[i] for i in batch], settings, until)
                for i, text in zip(batch, texts):
                    results[i] = text
                bar.update(len(batch))
        return results

    def _loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        results = []
        for request in tqdm(requests, desc="topo_pruned log-likelihood", disable=self.hide_progress):
            context, target, doc_to_visual, doc_id, task, split = request.args
            doc = self._doc(task, split, doc_id)
            continuation = target if isinstance(target, str) else str(target(doc))
            visuals = doc_to_visual(doc) if callable(doc_to_visual) else []
            results.append(self.backend.continuation_nll(Prompt.from_text(context, visuals or []), continuation))
        return results

    def _generate_until_multi_round(self, requests: list[Instance]) -> list[list[str]]:
        results = []
        for request in tqdm(requests, desc="topo_pruned multi-round", disable=self.hide_progress):
            args = request.args
            doc_id, task, split = args[-3:]
            doc = self._doc(task, split, doc_id)
            prompt, gen_kwargs = self._prompt_for(args)
            settings, until = generation_settings(gen_kwargs, self.config.evaluation.max_new_tokens)
            outputs: list[str] = []
            info = None
            for round_idx in range(MAX_ROUNDS):
                if round_idx > 0:
                    prompt, info = self._round_prompt(args, doc, round_idx, outputs, info)
                    if prompt is None:
                        break
                outputs.append(self.backend.generate([prompt], settings, until)[0])
            results.append(outputs)
        return results


def _batches(order: list[int], key: Callable[[int], str], size: int) -> list[list[int]]:
    """Consecutive runs of ``order`` with the same key, cut into chunks of at most ``size``."""
    batches: list[list[int]] = []
    for index in order:
        if batches and len(batches[-1]) < size and key(batches[-1][0]) == key(index):
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


class TopoPrunedChat(_TopoPrunedBase):
    """Chat layout: ``(context, doc_to_messages, generation_kwargs, doc_id, task, split)``."""

    is_simple = False

    def _prompt_for(self, args: tuple) -> tuple[Prompt, dict]:
        _context, doc_to_messages, gen_kwargs, doc_id, task, split = args
        return Prompt.from_lmms_messages(doc_to_messages(self._doc(task, split, doc_id))), gen_kwargs

    def _round_prompt(self, args, doc, round_idx, outputs, info):
        payload = args[1](doc, round_idx=round_idx, previous_output=list(outputs), previous_round_info=info)
        if not (isinstance(payload, tuple) and len(payload) == 4) or payload[1]:
            return None, info
        messages, _terminal, _previous, info = payload
        return Prompt.from_lmms_messages(messages), info


class TopoPrunedSimple(_TopoPrunedBase):
    """Simple layout: ``(context, generation_kwargs, doc_to_visual, [doc_to_text,] doc_id, task, split)``."""

    is_simple = True

    def _prompt_for(self, args: tuple) -> tuple[Prompt, dict]:
        context, gen_kwargs, doc_to_visual = args[:3]
        doc_id, task, split = args[-3:]
        visuals = doc_to_visual(self._doc(task, split, doc_id)) if callable(doc_to_visual) else []
        return Prompt.from_text(context, visuals or []), gen_kwargs

    def _round_prompt(self, args, doc, round_idx, outputs, info):
        visuals, text, terminal, _previous, info = args[3](
            doc, previous_output=list(outputs), round_idx=round_idx, previous_round_info=info
        )
        if terminal:
            return None, info
        return Prompt.from_text(text, visuals or []), info
