"""Bad input to ``topo-prune``: one line saying what is wrong and what to do, exit 2, before any heavy work; an
unexpected exception reads ``topo-prune <command> failed: <type>: <message>`` (exit 1)."""

import json

import pytest

from cli import topo_prune
from lmms_topo_plugin.cli.main import main
from lmms_topo_plugin.exporters import export

# a model that does not exist: a refusal printed instead of a load error proves the check came before loading
NOWHERE = "pretrained=/nonexistent/model,method=spacing,n_remove=1,device=cpu"


def err_lines(capsys) -> list[str]:
    return capsys.readouterr().err.splitlines()


def test_export_into_a_directory_of_other_files_is_refused_before_loading(tmp_path, capsys):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    assert main(["export", "--model-args", NOWHERE, "--out", str(notes)]) == 2
    assert err_lines(capsys) == [f"topo-prune: --out {notes} exists and is not an export (it holds other files); "
                                 f"choose another --out or remove {notes}"]
    assert [path.name for path in notes.iterdir()] == ["todo.txt"]


def test_export_into_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "build").write_text("")
    assert main(["export", "--model-args", NOWHERE, "--out", str(tmp_path / "build")]) == 2
    assert err_lines(capsys) == [f"topo-prune: --out {tmp_path / 'build'} is a file, not a directory; choose another "
                                 "--out"]


@pytest.mark.parametrize("existing, line", [
    ({"index.json": "{}", "spacing-0.25-default/config.json": "{}"}, "already holds an export; pass --overwrite to "
                                                                     "replace it, or choose another --out"),
    ({"spacing-0.25-default/config.json": "{}"}, "already holds an export; pass --overwrite to replace it, or choose "
                                                 "another --out"),  # an interrupted --pareto export
    ({"notes.txt": "keep me"}, "exists and is not an export (it holds other files); choose another --out or remove "
                               "{out}"),
])
def test_export_pareto_checks_its_destination_before_reading_the_sweep(existing, line, tmp_path, capsys):
    out = tmp_path / "front"
    for name, text in existing.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    assert main(["export", "--pareto", str(tmp_path / "no-sweep"), "--out", str(out)]) == 2
    assert err_lines(capsys) == [f"topo-prune: --out {out} {line.format(out=out)}"]


def test_prune_save_into_a_directory_of_other_files_is_refused_before_loading(tmp_path, capsys):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    assert main(["prune", "--model-args", NOWHERE, "--report-dir", str(tmp_path / "r"), "--save", str(notes)]) == 2
    assert err_lines(capsys) == [f"topo-prune: --save {notes} exists and is not an export (it holds other files); "
                                 f"choose another --save or remove {notes}"]


def test_onnx_generate_on_a_directory_that_is_not_a_build(tiny_checkpoints, tmp_path, capsys):
    checkpoint = tiny_checkpoints("llava", 6)
    capsys.readouterr()  # building it prints progress
    assert main(["onnx-generate", str(tmp_path), "--prompt", "hi"]) == 2
    assert main(["onnx-generate", str(checkpoint), "--prompt", "hi"]) == 2
    assert main(["onnx-generate", str(tmp_path / "missing"), "--prompt", "hi"]) == 2
    assert err_lines(capsys) == [
        f"topo-prune: {tmp_path} is not an ONNX build (no onnx/manifest.json); give the --out directory of topo-prune "
        "export --onnx",
        f"topo-prune: {checkpoint} is a checkpoint without an ONNX build (no onnx/manifest.json); export it with "
        "topo-prune export --onnx",
        f"topo-prune: {tmp_path / 'missing'} is not a directory; give the --out directory of topo-prune export --onnx"]


def test_onnx_generate_refuses_a_build_format_newer_than_it_reads(tmp_path, capsys):
    from lmms_topo_plugin.records import ONNX_BUILD

    build = tmp_path / "build"
    (build / "onnx").mkdir(parents=True)
    manifest = build / "onnx" / "manifest.json"
    manifest.write_text(json.dumps({"schema": ONNX_BUILD.name, "version": ONNX_BUILD.version + 1}))
    assert main(["onnx-generate", str(build), "--prompt", "hi"]) == 2
    assert err_lines(capsys) == [
        f"topo-prune: {manifest} is a lmms_topo_plugin.onnx_build v{ONNX_BUILD.version + 1} build; this "
        f"lmms-topo-plugin reads lmms_topo_plugin.onnx_build up to v{ONNX_BUILD.version}: upgrade the plugin, or "
        "export again with this one"]


def test_onnx_generate_with_a_file_that_is_not_an_image(tmp_path, capsys):
    """The images are read before any ONNX session loads (a directory with a manifest passes the build check)."""
    build = tmp_path / "build"
    (build / "onnx").mkdir(parents=True)
    (build / "onnx" / "manifest.json").write_text("{}")
    (tmp_path / "scene.png").write_text("not a picture")
    (tmp_path / "folder.png").mkdir()
    for image in ("scene.png", "missing.png", "folder.png"):
        assert main(["onnx-generate", str(build), "--image", str(tmp_path / image), "--prompt", "hi"]) == 2
    assert err_lines(capsys) == [
        f"topo-prune: --image {tmp_path / 'scene.png'} is not an image file Pillow can read; give a PNG or JPEG "
        "(topo-prune example-image writes one)",
        f"topo-prune: --image {tmp_path / 'missing.png'}: no such file",
        f"topo-prune: --image {tmp_path / 'folder.png'} is a directory; give an image file (PNG, JPEG, ...)"]


def test_an_unexpected_error_names_the_command_once(tiny_checkpoints, tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(export, "export_model_args", broken)
    assert main(["export", "--model-args", f"pretrained={tiny_checkpoints('llava', 6)}", "--out",
                 str(tmp_path / "build")]) == 1
    assert err_lines(capsys)[-1:] == ["topo-prune export failed: RuntimeError: boom"]


def test_bad_input_through_the_installed_command(tmp_path):
    """The same line and exit code from the console command (``python -m lmms_topo_plugin.cli.main``)."""
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "config.json").write_text(json.dumps({}))
    result = topo_prune("export", "--model-args", NOWHERE, "--out", tmp_path / "build", module=True, timeout=300)
    assert (result.returncode, result.stderr.splitlines(), result.stdout) == (2, [
        f"topo-prune: --out {tmp_path / 'build'} already holds an export; pass --overwrite to replace it, or choose "
        "another --out"], "")
