"""atomic_write: a file is replaced whole or not at all."""
import os

import pytest

from mindtune.atomic import atomic_write


def test_a_write_that_fails_leaves_the_old_file_and_no_partial(tmp_path):
    path = tmp_path / "sub" / "state.json"
    with atomic_write(str(path)) as f:
        f.write("old")
    with pytest.raises(RuntimeError):
        with atomic_write(str(path)) as f:
            f.write("new, half written")
            raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert os.listdir(path.parent) == ["state.json"]


def test_a_finished_write_replaces_the_file(tmp_path):
    path = tmp_path / "rows.bin"
    path.write_bytes(b"old")
    with atomic_write(str(path), "wb") as f:
        f.write(b"new")
        assert path.read_bytes() == b"old"      # nothing visible until the block ends
    assert path.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["rows.bin"]
