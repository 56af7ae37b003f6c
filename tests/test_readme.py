"""README.md gives exactly two set-up commands, CI runs the second one verbatim, and the README stays short; the
guides in docs/ say what the code does (families, the worked example) and the generated reference pages are fresh."""

import re

from conftest import REPO


def setup_commands() -> list[str]:
    quick_start = (REPO / "README.md").read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", quick_start, flags=re.DOTALL)


def test_readme_has_two_one_line_setup_commands():
    commands = setup_commands()
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    install_and_run, install_and_test = commands
    assert "pip install -e ." in install_and_run and install_and_run.endswith("python launch.py")
    assert 'pip install -e ".[test]"' in install_and_test and install_and_test.endswith("python -m pytest")


def test_ci_runs_the_readme_test_command():
    ci_lines = (REPO / ".ci" / "run").read_text().splitlines()
    assert setup_commands()[1] in ci_lines


def test_readme_is_short_and_points_to_the_guides():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    for page in ("running", "sweeps", "cluster", "models", "datasets", "methods", "fidelity", "metrics", "reports",
                 "performance", "adding_a_method", "testing"):  # fmt: skip
        assert f"(docs/{page}.md)" in readme and (REPO / "docs" / f"{page}.md").is_file(), page


def test_generated_reference_pages_are_fresh():
    from orchestration.catalog import PAGES

    for name, page in PAGES.items():
        assert (REPO / "docs" / name).read_text(encoding="utf-8") == page(), (
            f"docs/{name} is stale: python -m orchestration.catalog --write docs"
        )


def table_rows(first_cells: tuple[str, ...], page: str = "docs/methods.md") -> list[list[str]]:
    """The table rows of a page whose first cell is one of `first_cells`, split into cells."""
    rows = []
    for line in (REPO / page).read_text().splitlines():
        cells = [cell.strip() for cell in line.strip("|").split(" | ")]
        if line.startswith("|") and cells[0] in first_cells:
            rows.append(cells)
    return rows


def names(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def test_methods_table_lists_each_methods_families_as_the_code_declares_them():
    import yaml

    from editors import EDITORS
    from invbench.models import MODEL_FAMILIES
    from inversions import INVERSIONS

    rows = table_rows(("inversion", "editor"))
    seen = set()
    for axis, name_cell, family_cell, *_ in rows:
        registry = INVERSIONS if axis == "inversion" else EDITORS
        for name in names(name_cell):
            config = REPO / "conf" / axis / f"{name}.yaml"
            if not config.is_file():
                continue  # a spelling (ntI)
            seen.add((axis, name))
            node = yaml.safe_load(config.read_text())
            while "name" not in node:  # a variant composed from its base
                base = next(item for item in node["defaults"] if item != "_self_")
                node = yaml.safe_load((REPO / "conf" / axis / f"{base}.yaml").read_text())
            families = registry.get(node["name"]).families
            assert sorted(names(family_cell)) == sorted(families), (axis, name)
            assert families <= set(MODEL_FAMILIES)
    assert {name for axis, name in seen if axis == "inversion"} >= set(INVERSIONS.names()) - {"ntI"}
    assert {name for axis, name in seen if axis == "editor"} >= set(EDITORS.names())


def test_models_table_gives_each_models_family():
    import yaml

    rows = table_rows(tuple(f"`model={path.stem}`" for path in (REPO / "conf" / "model").glob("*.yaml")),
                      "docs/models.md")  # fmt: skip
    assert len(rows) >= 5
    for model_cell, family_cell, *_ in rows:
        config = yaml.safe_load((REPO / "conf" / "model" / f"{names(model_cell)[0][6:]}.yaml").read_text())
        assert names(family_cell) == [config["family"]]


def worked_example() -> dict[str, str]:
    """The guide's worked example: {path: contents} of each code block whose first line names its file."""
    section = (REPO / "docs" / "adding_a_method.md").read_text().split("## Worked example: adding an inversion", 1)[1]
    section = section.split("\n## ", 1)[0]
    files = {}
    for block in re.findall(r"```(?:python|yaml)\n(.+?)\n```", section, flags=re.DOTALL):
        first, _, body = block.partition("\n")
        files[first.lstrip("# ").strip()] = body + "\n"
    return files


def test_the_worked_example_adds_an_inversion_with_exactly_its_file_and_its_yaml(tmp_path):
    import shutil

    from conftest import FAST, run

    from invbench.results import read_rows

    files = worked_example()
    assert sorted(files) == ["conf/inversion/pinned_source.yaml", "inversions/pinned_source.py"]
    copy = tmp_path / "repo"
    shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns(".git", ".venv", "golden", "outputs", "multirun"))
    for path, text in files.items():
        assert not (copy / path).exists()
        (copy / path).write_text(text)
    sweep = tmp_path / "sweep"
    code, output = run(str(copy / "launch.py"), "-m", "inversion=pinned_source,none", "editor=p2p",
                       "dataset.categories=[1]", *FAST, f"hydra.sweep.dir={sweep}", cwd=tmp_path)  # fmt: skip
    assert code == 0, output
    (pinned,) = read_rows(sweep / "0_pinned_source+p2p_cat1" / "results.jsonl")
    (none,) = read_rows(sweep / "1_none+p2p_cat1" / "results.jsonl")
    assert pinned["status"] == "ok" and pinned["inversion"] == "pinned_source" and pinned["editor"] == "p2p"
    # pinned to the trajectory, the source branch lands on z_0 itself at guidance 7.5: its reconstruction is the
    # VAE round trip of the source, the image inversion=none returns, byte for byte
    reconstructions = [(sweep / folder / row["reconstruction_image"]).read_bytes() for folder, row in
                       (("0_pinned_source+p2p_cat1", pinned), ("1_none+p2p_cat1", none))]  # fmt: skip
    assert reconstructions[0] == reconstructions[1]
