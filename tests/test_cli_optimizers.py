"""``ravine optimizers`` and ``ravine.optimizers()``: every registered optimizer with its paper,
defaults and a "use when", as a table, JSON or Markdown; help(ravine.create) names the registry."""

from __future__ import annotations

import json
import pydoc

import pytest

import ravine
from ravine.cli import main
from ravine.optim import catalog, registry


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["optimizers", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_top_level_rows_cover_the_registry_with_paper_defaults_and_use_when() -> None:
    rows = ravine.optimizers()
    assert [r["name"] for r in rows] == registry.names()
    for r in rows:
        entry = registry.get(r["name"])
        assert r["paper"] and r["citation"] == entry.paper, r["name"]
        assert r["use_when"], f"{r['name']} has no use_when"
        assert r["defaults"] == json.loads(json.dumps(r["defaults"]))  # JSON-ready
        assert set(r["defaults"]) == set(entry.defaults)
    adadelta = next(r for r in rows if r["name"] == "adadelta")
    assert adadelta["defaults"]["lr"] == 1.0 and adadelta["paper"] == "Zeiler 2012, arXiv:1212.5701"
    adam = next(r for r in rows if r["name"] == "adam")
    assert adam["defaults"]["betas"] == [0.9, 0.999] and adam["factory"] == "ravine.optim.adam.Adam"


def test_every_catalog_row_says_when_to_use_it() -> None:
    for row in catalog.ROWS:
        assert 10 < len(row.use_when) <= 80, f"{row.name}: use_when {row.use_when!r}"


def test_json_output_is_the_same_rows(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(capsys, "--format", "json")
    assert code == 0 and json.loads(out) == ravine.optimizers()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], ["adadelta", "Zeiler 2012", "lr=1.0, rho=0.9", "use when: no learning rate to tune"]),
        (["lbfgs", "Adam"], ["lbfgs", "adam", "betas=(0.9, 0.999)"]),
        (["--format", "markdown", "rprop"], ["| `rprop` | Riedmiller & Braun 1993", "etas=(0.5"]),
    ],
    ids=["table", "chosen-names", "markdown"],
)
def test_table_and_markdown(capsys: pytest.CaptureFixture[str], argv, expected) -> None:
    code, out, _ = _cli(capsys, *argv)
    assert code == 0
    for text in expected:
        assert text in out
    if argv[:1] == ["lbfgs"]:
        assert out.index("lbfgs") < out.index("adam") and "sgd " not in out


def test_unknown_name_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(capsys, "adamm")
    assert code == 2 and out == ""
    assert "Unknown optimizer 'adamm'; did you mean 'adam'" in err


def test_a_registered_optimizer_is_listed_with_its_use_when() -> None:
    entry = registry.register(
        "test_cli_nesterov",
        ravine.SGD,
        paper="Nesterov 1983",
        use_when="momentum=0.9 fixed on",
        momentum=0.9,
        nesterov=True,
    )
    try:
        row = ravine.optimizers()[-1]
        assert row["name"] == "test_cli_nesterov" and row["paper"] == "Nesterov 1983"
        assert row["defaults"]["nesterov"] is True and row["use_when"] == "momentum=0.9 fixed on"
    finally:
        del registry._REGISTRY[entry.name]


def test_help_of_create_documents_the_registry() -> None:
    text = pydoc.render_doc(ravine.create, renderer=pydoc.plaintext)
    for needed in ("ravine optimizers", "register(", "did you mean", "Invalid lr", "adadelta"):
        assert needed in text, needed
