"""The core is pure: no Dagster, and no file written (the Dagster layer and nexus_assets.site_files
do the writing)."""

import ast
import pathlib

import nexus_assets.core

CORE = pathlib.Path(nexus_assets.core.__file__).parent
# Imports that mean Dagster or writing files (atomic writes, fsspec paths, temporary files).
FORBIDDEN_IMPORTS = ("dagster", "nexus_assets.atomic", "nexus_assets.site_files", "upath", "fsspec", "tempfile")
# Calls that write or move files.
FORBIDDEN_CALLS = ("write_bytes", "write_text", "write_bytes_atomic", "write_many_atomic", "mkdir", "unlink")
# A review tool run by hand (python -m ...), not a step of the pipeline: it drives a browser and
# saves screenshots; not yet moved out of core, and named so that nothing else joins it.
NOT_YET_MOVED = {"dashboard/screenshots.py"}


def _problems(path: pathlib.Path, root: pathlib.Path = CORE) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        found += [f"imports {name}" for name in names
                  if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN_IMPORTS)]
        if isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in FORBIDDEN_CALLS:
                found.append(f"calls {called}")
            if called == "open" and any(isinstance(a, ast.Constant) and isinstance(a.value, str) and set(a.value) & set("wax+")
                                        for a in [*node.args[1:], *(k.value for k in node.keywords if k.arg == "mode")]):
                found.append("opens a file for writing")
    return [f"{path.relative_to(root).as_posix()}:{problem}" for problem in found]


def test_the_core_imports_no_dagster_and_writes_no_file():
    offenders = [problem for path in sorted(CORE.rglob("*.py")) if path.relative_to(CORE).as_posix() not in NOT_YET_MOVED
                 for problem in _problems(path)]
    assert not offenders, offenders


def test_the_check_finds_what_it_looks_for(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import dagster\nfrom upath import UPath\nfrom nexus_assets.atomic import write_bytes_atomic\n"
                      "write_bytes_atomic(p, b'')\np.write_text('x')\nopen(p, 'wb')\nopen(p, mode='a')\nopen(p)\n"
                      "frame.rename(columns={})\n")
    assert [problem.split(":", 1)[1] for problem in _problems(sample, tmp_path)] == [
        "imports dagster", "imports upath", "imports nexus_assets.atomic", "calls write_bytes_atomic",
        "calls write_text", "opens a file for writing", "opens a file for writing"]
