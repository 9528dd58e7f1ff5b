"""The generated pages of the documentation site (scripts/docs_pages.py) are what the code and bench/results/ give now.

The results pages come from bench/results/ (bench/pages/, tested in tests/test_results_pages.py), the reference
pages from the typed model_args configs and the topo-prune argument parser. The reference is also read against the
code by a second path: the defaults of a config instance, the parser's own subcommands and options.
"""

import dataclasses
import stat
from pathlib import Path

import pytest

from script_modules import load_script

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str):
    return load_script(Path("scripts") / f"{name}.py")


docs_pages = _load("docs_pages")
RENDERED = docs_pages.render_all()


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_committed_page_is_what_would_be_generated_now(name):
    """Editing the code, a bench's JSON or a generated page without regenerating fails here (--check's test)."""
    path = ROOT / "docs" / name
    assert path.is_file() and path.read_text(encoding="utf-8") == RENDERED[name], (
        f"docs/{name} differs from what the code and bench/results/ generate now; run "
        ".venv/bin/python scripts/docs_pages.py --write")


def _row(page: str, key: str) -> str:
    (line,) = [line for line in page.splitlines() if line.startswith(f"| `{key}` |")]
    return line


def _cells(row: str) -> list[str]:
    return [cell.strip() for cell in row.strip("|").split(" | ")]


def _shown(value) -> str:
    return "–" if value is None else f"`{str(value).lower() if isinstance(value, bool) else value}`"


def _sections(page: str) -> dict[str, str]:
    """``{### heading: its text}`` of a page."""
    parts = page.split("\n### ")[1:]
    return {part.split("\n", 1)[0]: part for part in parts}


def test_model_args_reference_gives_every_key_of_each_method_with_the_config_default():
    from lmms_topo_plugin.scorers.registry import available_methods, get_method

    sections = _sections(RENDERED["reference/model-args.md"])
    for name in available_methods()[1:]:
        config = get_method(name).config_class()  # the defaults as the code builds them
        keys = [field.name for field in dataclasses.fields(config)]
        if not keys:
            assert "No keys of its own." in sections[name]
        for key in keys:
            cells = _cells(_row(sections[name], key))
            assert cells[2] == _shown(getattr(config, key)), (name, key)
    topology = _cells(_row(sections["topology"], "topo_k"))
    assert topology[:3] == ["`topo_k`", "int", "`5`"]
    comp_widths = _cells(_row(sections["comp"], "comp_widths"))
    assert comp_widths[2] == "`per_layer`" and comp_widths[3] == "one of per_layer, uniform"


def test_model_args_reference_gives_the_general_and_token_keys():
    from lmms_topo_plugin.config.prune import CONCERNS, PruneConfig
    from lmms_topo_plugin.tokens import TOKEN_METHODS

    page = RENDERED["reference/model-args.md"]
    sections = _sections(page)
    config = PruneConfig()
    for name in CONCERNS:
        concern = getattr(config, name)
        for field in dataclasses.fields(concern):
            if "param" in field.metadata:
                assert _cells(_row(sections[name.capitalize()], field.name))[2] == _shown(getattr(concern, field.name))
    assert _cells(_row(sections["Evaluation"], "backend"))[3] == "one of pytorch, onnxruntime"
    assert _cells(_row(sections["Layers"], "sparsity"))[3] == "a float in [0.0, 1.0)"
    for name, pruner in TOKEN_METHODS.items():
        defaults = pruner.config_class()
        for field in dataclasses.fields(defaults):
            if field.name != "token_method":
                assert _cells(_row(sections[f"{name} (visual tokens)"], field.name))[2] == _shown(
                    getattr(defaults, field.name))
        assert "`token_method`" not in sections[f"{name} (visual tokens)"]


def test_cli_reference_lists_every_subcommand_and_option_of_the_parser():
    import argparse

    from lmms_topo_plugin.cli.main import COMMANDS, build_parser

    page = RENDERED["reference/cli.md"]
    parser = build_parser()
    (subparsers,) = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    assert list(subparsers.choices) == list(COMMANDS)
    headings = [line.removeprefix("## ") for line in page.splitlines() if line.startswith("## ")]
    assert headings == list(COMMANDS)
    sections = dict(zip(headings, page.split("\n## ")[1:]))
    for name, sub in subparsers.choices.items():
        assert f"| [`{name}`](#{name}) | {COMMANDS[name].HELP.replace('|', chr(92) + '|')} |" in page
        assert f"```text\ntopo-prune {name} " in sections[name]
        for action in sub._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert f"`{option}" in sections[name] or f", {option}" in sections[name], (name, option)
            if not action.option_strings:
                assert f"| `{action.metavar or action.dest}` |" in sections[name], (name, action.dest)
    sweep = sections["sweep"]
    assert "(default: " in sweep  # the StatedDefaults help, as --help prints it


def test_write_then_check_on_a_fresh_docs_folder(tmp_path, capsys):
    docs = tmp_path / "docs"
    assert docs_pages.main(["--docs", str(docs), "--check"]) == 1
    assert docs_pages.main(["--docs", str(docs), "--write"]) == 0
    assert docs_pages.main(["--docs", str(docs), "--check"]) == 0
    written = sorted(str(path.relative_to(docs)) for path in docs.rglob("*") if path.is_file())
    assert written == sorted(RENDERED)  # no temporary file left
    page = docs / "results" / "speed.md"
    assert stat.S_IMODE(page.stat().st_mode) & 0o644 == 0o644
    page.chmod(0o640)
    page.write_text("stale\n")
    capsys.readouterr()
    assert docs_pages.main(["--docs", str(docs), "--check"]) == 1
    assert capsys.readouterr().err.count("differs from what the code") == 1
    assert docs_pages.main(["--docs", str(docs), "--write"]) == 0
    assert "wrote results/speed.md" in capsys.readouterr().out
    assert page.read_text() == RENDERED["results/speed.md"] and stat.S_IMODE(page.stat().st_mode) == 0o640
