"""Owner-only files and directories, whatever the umask."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from l2model.private import make_private, open_private, private_dir, write_private
from tests.fixtures.exposure import not_private

pytestmark = pytest.mark.usefixtures("loose_umask")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_directory_and_its_missing_parents_are_created_owner_only(tmp_path: Path) -> None:
    leaf = private_dir(tmp_path / "var" / "models" / "registry")
    assert leaf.is_dir()
    assert not_private(tmp_path / "var") == []


def test_a_directory_that_exists_is_left_as_it_is(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    private_dir(shared / "curated")
    assert _mode(shared) == 0o755
    assert _mode(shared / "curated") == 0o700


def test_files_are_written_owner_only_new_or_not(tmp_path: Path) -> None:
    earlier = tmp_path / "earlier.jsonl"
    earlier.write_bytes(b"{}\n")
    earlier.chmod(0o644)
    with open_private(earlier, "ab") as out:
        out.write(b"{}\n")
    write_private(tmp_path / "new.md", "# report\n")
    assert earlier.read_bytes() == b"{}\n{}\n"
    assert (tmp_path / "new.md").read_text() == "# report\n"
    assert _mode(earlier) == _mode(tmp_path / "new.md") == 0o600


def test_a_copied_tree_is_made_owner_only(tmp_path: Path) -> None:
    tree = tmp_path / "model"
    (tree / "sub").mkdir(parents=True, mode=0o755)
    (tree / "model.onnx").write_bytes(b"onnx")
    (tree / "sub" / "tokenizer.json").write_bytes(b"{}")
    tree.chmod(0o755)
    assert not_private(tree) != []
    make_private(tree)
    assert not_private(tree) == []
