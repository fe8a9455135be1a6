import os
import stat

from locallearn.engine.io import atomic_write_json, atomic_write_text


def test_atomic_write_replaces_whole_files_with_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = tmp_path / "sub" / "out.json"
        atomic_write_json(path, {"a": 1})
        assert path.read_text() == '{\n  "a": 1\n}\n'
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        path.chmod(0o600)
        atomic_write_text(path, "new")
        assert path.read_text() == "new"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, "an existing file keeps its mode"
        assert [p.name for p in path.parent.iterdir()] == ["out.json"], "no temp file left"
    finally:
        os.umask(old)
