"""Writing the dashboard site: its one shared plotly.js, and atomic writes of its files."""

import os
from importlib import resources

import pytest
from upath import UPath

from nexus_assets.core.dashboard import plotly_js_path
from nexus_assets.core.dashboard.site import plotly_js_version
from nexus_assets.site_files import write_site_assets, write_site_file, write_site_files


def test_plotly_js_is_the_installed_packages_copy_written_once(tmp_path):
    path = write_site_assets(tmp_path)
    assert UPath(tmp_path / plotly_js_path()) == path
    bundled = resources.files("plotly").joinpath("package_data/plotly.min.js").read_bytes()
    assert (tmp_path / plotly_js_path()).read_bytes() == bundled
    assert f"plotly.js v{plotly_js_version()}".encode() in bundled[:200]
    local = tmp_path / plotly_js_path()
    os.utime(local, (1_000_000, 1_000_000))
    write_site_assets(tmp_path)
    assert local.stat().st_mtime == 1_000_000  # identical copy: not rewritten
    local.write_bytes(b"truncated")
    write_site_assets(tmp_path)
    assert local.read_bytes() == bundled
    assert sorted(p.name for p in (tmp_path / "assets").iterdir()) == [local.name]  # no temporary file left


def test_write_site_file_replaces_atomically_and_leaves_no_temporary(tmp_path, monkeypatch):
    write_site_file(tmp_path, "asset=A/date=2018-01-02.html", "old")
    seen = []
    real_replace = os.replace

    def replace(source, target):
        seen.append(((tmp_path / "asset=A/date=2018-01-02.html").read_text(), os.path.basename(source)))
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    write_site_file(tmp_path, "asset=A/date=2018-01-02.html", "new \u2713")
    assert seen[0][0] == "old" and seen[0][1].startswith(".date=2018-01-02.html.")  # readers saw the old file until the rename
    assert (tmp_path / "asset=A/date=2018-01-02.html").read_text(encoding="utf-8") == "new \u2713"
    assert os.listdir(tmp_path / "asset=A") == ["date=2018-01-02.html"]


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    write_site_file(tmp_path, "index.html", "old")

    def fail(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        write_site_file(tmp_path, "index.html", "new")
    assert (tmp_path / "index.html").read_text() == "old"
    assert os.listdir(tmp_path) == ["index.html"]


def test_object_store_roots_get_one_put():
    root = "memory://nexus-dashboard-test/site"
    write_site_assets(root)
    path = write_site_file(root, "index.html", "<!DOCTYPE html>")
    assert path.read_text() == "<!DOCTYPE html>"
    assert UPath(root).joinpath(*plotly_js_path().split("/")).exists()


def test_many_files_are_written_together_each_atomically_and_equal_one_by_one(tmp_path, monkeypatch):
    files = [(f"asset=A/date=2018-01-0{d}.html", f"page {d} \u2713") for d in range(1, 4)] + [
        ("asset=A/date=2018-01-01.json", b'{"signal": "BUY"}'), ("index.html", "index")]
    write_site_file(tmp_path / "one", "asset=A/date=2018-01-02.html", "old")
    write_site_file(tmp_path / "many", "asset=A/date=2018-01-02.html", "old")
    seen = []
    real_replace = os.replace

    def replace(source, target):  # readers see the old file until its rename
        seen.append((os.path.basename(target), open(target, "rb").read() if os.path.exists(target) else None))
        real_replace(source, target)

    for relative, data in files:
        write_site_file(tmp_path / "one", relative, data)
    monkeypatch.setattr(os, "replace", replace)
    paths = write_site_files(tmp_path / "many", files)
    assert [UPath(tmp_path / "many" / relative) for relative, _ in files] == paths
    assert ("date=2018-01-02.html", b"old") in seen
    one, many = (sorted(p.relative_to(tmp_path / side) for p in (tmp_path / side).rglob("*")) for side in ("one", "many"))
    assert one == many and all(not p.name.startswith(".") for p in many)  # no temporary file left
    assert all((tmp_path / "one" / p).read_bytes() == (tmp_path / "many" / p).read_bytes() for p in many
               if (tmp_path / "many" / p).is_file())
