"""``topo-prune example-image``: a benchmark image and exactly the prompt lmms-eval gives the model for it, so that

    topo-prune onnx-generate build/ --image example.png --prompt "$(topo-prune example-image example.png)"

gets an answer in the benchmark's format from the bundled model.
"""

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli import argv, run, topo_prune
from lmms_topo_plugin.integrations.lmms_eval.tasks import bundled_tasks_dir
from lmms_topo_plugin.cli.main import main

DATA = Path(__file__).resolve().parent.parent / "tasks" / "topo_synth" / "data"
(TOPO_PRUNE,) = argv("topo-prune")
# (split, --index, the lmms-eval task serving that document, its index in the task): kinds in turn, 100 per kind
DOCUMENTS = [("test", 0, "topo_synth_presence", 0), ("test", 201, "topo_synth_count", 1),
             ("test", 499, "topo_synth_math", 99), ("dev", 342, "topo_synth_dev_spatial", 42)]


@pytest.fixture(scope="module")
def lmms_eval_requests():
    """``{(task, doc index): (context, image)}``: what lmms-eval itself passes the model for each of DOCUMENTS."""
    from lmms_eval.tasks import TaskManager, get_task_dict

    manager = TaskManager(include_path=bundled_tasks_dir(), include_defaults=False)
    tasks = get_task_dict(sorted({name for *_, name, _ in DOCUMENTS}), manager)
    requests = {}
    for *_, name, doc_id in DOCUMENTS:
        task = tasks[name]
        task.build_all_requests(limit=doc_id + 1, rank=0, world_size=1)
        (instance,) = [instance for instance in task.instances if instance.doc_id == doc_id]
        context, _, doc_to_visual, *_ = instance.args
        (image,) = doc_to_visual(task.test_docs()[doc_id])
        requests[name, doc_id] = context, image
    return requests


def stored_record(split: str, name: str, doc_id: int) -> dict:
    """Line ``doc_id`` of the task's data file, read directly."""
    kind = name.rsplit("_", 1)[1]
    return json.loads((DATA / f"{split}_{kind}.jsonl").read_text().splitlines()[doc_id])


@pytest.mark.parametrize("split, index, name, doc_id", DOCUMENTS)
def test_example_image_is_the_benchmark_document(split, index, name, doc_id, lmms_eval_requests, tmp_path, capsys):
    out = tmp_path / "example.png"
    assert main(["example-image", str(out), "--index", str(index), "--split", split]) == 0
    captured = capsys.readouterr()
    context, image = lmms_eval_requests[name, doc_id]
    record = stored_record(split, name, doc_id)
    assert captured.out == f"{context}\n"  # only the prompt; the shell's "$(...)" drops the last newline
    assert captured.err == f"{out}: expected answer: {record['answer']}\n"
    assert out.read_bytes() == base64.b64decode(record["image"])
    np.testing.assert_array_equal(np.asarray(Image.open(out).convert("RGB")), np.asarray(image))


def test_the_bundled_model_answers_the_example_in_the_benchmarks_format(tmp_path, capsys):
    """The prompt and image as ``onnx-generate`` builds them (``Prompt.from_text``), decoded greedily for
    onnx-generate's default 32 new tokens: the bundled model answers and stops (eos), right, for every kind."""
    from lmms_topo_plugin.api import load_pruned
    from lmms_topo_plugin.cli.onnx_generate import read_image
    from lmms_topo_plugin.runtime.generation import generate
    from lmms_topo_plugin.models.prompting import Prompt

    prompts, answers = [], []
    for index in (0, 100, 201, 300, 450):
        assert main(["example-image", str(tmp_path / f"{index}.png"), "--index", str(index)]) == 0
        captured = capsys.readouterr()
        prompts.append(Prompt.from_text(captured.out.removesuffix("\n"), [read_image(str(tmp_path / f"{index}.png"))]))
        answers.append(captured.err.removeprefix(f"{tmp_path / f'{index}.png'}: expected answer: ").removesuffix("\n"))
    loaded, _ = load_pruned({"method": "none", "device": "cpu"})
    assert generate(loaded, prompts, {"max_new_tokens": 32, "do_sample": False}, until=[]) == answers


@pytest.mark.parametrize("args, line", [
    (["--index", "500"], "--index 500 is out of range: the test split has 500 images (--index 0 to 499)"),
    (["--index", "-1", "--split", "calib"], "--index -1 is out of range: the calib split has 320 images (--index 0 to "
                                            "319)"),
])
def test_example_image_refuses_an_index_outside_the_split(args, line, tmp_path, capsys):
    assert main(["example-image", str(tmp_path / "example.png"), *args]) == 2
    assert capsys.readouterr().err.splitlines() == [f"topo-prune: {line}"]
    assert list(tmp_path.iterdir()) == []


def test_example_image_refuses_a_directory(tmp_path, capsys):
    assert main(["example-image", str(tmp_path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"topo-prune: {tmp_path} is a directory; give the image file to write, e.g. {tmp_path / 'example.png'}"]


@pytest.mark.e2e
def test_onnx_generate_answers_the_example_image(tmp_path):
    """The README's command, through the shell, on an ONNX build of the bundled model (about a minute to export)."""
    env = {"LMMS_TOPO_CACHE": str(tmp_path / "cache")}
    export = topo_prune("export", "--model-args", "method=none,device=cpu", "--out", tmp_path / "build", "--onnx",
                        env=env, timeout=900)
    assert export.returncode == 0, export.stderr[-3000:]
    for index, answer in ((0, "yes"), (201, "2"), (450, "3")):
        command = (f'"{TOPO_PRUNE}" onnx-generate build --provider cpu --image example.png --prompt '
                   f'"$("{TOPO_PRUNE}" example-image example.png --index {index})"')
        result = run("bash", "-c", command, cwd=tmp_path, env=env, timeout=300)
        assert (result.returncode, result.stdout) == (0, f"{answer}\n"), result.stderr[-3000:]
        assert f"example.png: expected answer: {answer}\n" in result.stderr
