"""FileObjectStore: the conformance suite plus layout, containment and lifecycle tests."""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from faasml.errors import InvalidKeyError, NotFoundError, ServiceUnavailableError
from faasml.storage import file as file_module
from faasml.storage.file import FileObjectStore
from faasml.testing.conformance.object_store import INVALID_KEYS, ObjectStoreTests


class TestFileObjectStore(ObjectStoreTests):
    @pytest.fixture
    def object_store(self, tmp_path: Path) -> Iterator[FileObjectStore]:
        store = FileObjectStore(str(tmp_path / "root"))
        yield store
        store.close()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


@pytest.fixture
def store(root: Path) -> Iterator[FileObjectStore]:
    s = FileObjectStore(str(root))
    yield s
    s.close()


def test_symlink_inside_root_pointing_outside_is_refused(
    tmp_path: Path, root: Path, store: FileObjectStore
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.obj").write_bytes(b"secret")
    (root / "evil").symlink_to(outside)
    for call in (
        lambda: store.put("evil/x", b"escaped"),
        lambda: store.get("evil/secret"),
        lambda: store.head("evil/secret"),
        lambda: store.delete("evil/secret"),
    ):
        with pytest.raises(InvalidKeyError, match="symbolic link"):
            call()
    assert sorted(p.name for p in outside.iterdir()) == ["secret.obj"]
    assert list(store.list("evil/")) == []
    assert list(store.list("")) == []


@pytest.mark.parametrize("swapped", ["a", "a/b"])
def test_directory_swapped_for_symlink_after_use_is_refused(
    tmp_path: Path, root: Path, store: FileObjectStore, swapped: str
) -> None:
    # the store remembers checked directories; a swap behind its back must not slip through
    store.put("a/b/first", b"1")
    assert store.get("a/b/first") == b"1"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "b").mkdir()
    (outside / "secret.obj").write_bytes(b"secret")
    (outside / "b" / "secret.obj").write_bytes(b"secret")
    victim = root / swapped
    victim.rename(tmp_path / "moved")
    victim.symlink_to(outside if swapped == "a" else outside / "b")
    with pytest.raises(InvalidKeyError, match="symbolic link"):
        store.get("a/b/secret")
    with pytest.raises(InvalidKeyError, match="symbolic link"):
        store.put("a/b/x", b"escaped")
    assert sorted(p.name for p in (outside / "b").iterdir()) == ["secret.obj"]


def test_pruned_and_recreated_directory_still_works(store: FileObjectStore) -> None:
    for round_ in range(3):
        store.put("p/q/k", str(round_).encode())
        assert store.get("p/q/k") == str(round_).encode()
        store.delete("p/q/k")  # prunes p/q and p: the remembered directory is gone
        with pytest.raises(NotFoundError):
            store.get("p/q/k")


def test_symlinked_object_file_is_refused_and_not_listed(
    tmp_path: Path, root: Path, store: FileObjectStore
) -> None:
    target = tmp_path / "passwd"
    target.write_bytes(b"root:x:0:0")
    (root / "link.obj").symlink_to(target)
    with pytest.raises(InvalidKeyError):
        store.get("link")
    with pytest.raises(InvalidKeyError):
        store.put("link", b"overwrite through the link")
    assert target.read_bytes() == b"root:x:0:0"
    assert list(store.list()) == []


def test_invalid_keys_write_nothing_anywhere(tmp_path: Path, store: FileObjectStore) -> None:
    for key in INVALID_KEYS:
        with pytest.raises(InvalidKeyError):
            store.put(key, b"x")
    assert [p.name for p in tmp_path.iterdir()] == ["root"]
    assert list((tmp_path / "root").iterdir()) == []


def test_temp_root_removed_on_close_but_not_by_a_rebuilt_store() -> None:
    store = FileObjectStore()
    root = store.to_config()["root"]
    assert os.path.isabs(root)
    assert os.path.basename(root).startswith("faasml-store-")
    if file_module._default_parent() == "/dev/shm":
        assert root.startswith("/dev/shm/")
    store.put("a/b", b"1")
    rebuilt = FileObjectStore(**store.to_config())
    assert rebuilt.get("a/b") == b"1"
    rebuilt.close()
    assert os.path.isdir(root)
    assert store.get("a/b") == b"1"
    store.close()
    store.close()
    assert not os.path.exists(root)


def test_explicit_root_survives_close(root: Path) -> None:
    store = FileObjectStore(str(root))
    store.put("k", b"v")
    store.close()
    assert (root / "k.obj").read_bytes() == b"v"


def test_operations_after_close_fail_clearly(store: FileObjectStore) -> None:
    store.close()
    with pytest.raises(ServiceUnavailableError, match="closed"):
        store.put("k", b"v")
    with pytest.raises(ServiceUnavailableError):
        store.get("k")


def test_relative_root_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = FileObjectStore("relative-root")
    assert store.to_config() == {"root": str(tmp_path / "relative-root")}
    store.close()


def test_leftover_temp_files_are_invisible(root: Path, store: FileObjectStore) -> None:
    store.put("dir/real", b"ok")
    # What a writer killed between creating and renaming its temporary file leaves behind.
    (root / "dir" / ".tmp-k1ll3d0x").write_bytes(b"half writ")
    (root / ".tmp-abcd1234").write_bytes(b"")
    assert [i.key for i in store.list()] == ["dir/real"]
    with pytest.raises(NotFoundError):
        store.get("dir/.tmp-k1ll3d0x")
    store.delete("dir/real")
    assert list(store.list()) == []


def test_no_temp_files_remain_after_writes(root: Path, store: FileObjectStore) -> None:
    store.put("a/b", b"1")
    store.put("a/b", b"2")
    store.put("a/c", b"3", if_absent=True)
    with pytest.raises(Exception):  # noqa: B017 - AlreadyExistsError; only the cleanup matters
        store.put("a/c", b"4", if_absent=True)
    with pytest.raises(TypeError):
        store.put("a/d", "not bytes")  # type: ignore[arg-type]
    assert sorted(os.listdir(root / "a")) == ["b.obj", "c.obj"]


def test_layout_lets_a_key_and_its_children_coexist(root: Path, store: FileObjectStore) -> None:
    keys = ["a", "a/b", "a.obj", "a.obj/b", "a.obj~/c", ".tmp-x", ".tmp-x/y", "x~/z", "x~"]
    for key in keys:
        store.put(key, key.encode())
    for key in keys:
        assert store.get(key) == key.encode()
    assert [i.key for i in store.list()] == sorted(keys)
    assert [i.key for i in store.list("a.obj")] == ["a.obj", "a.obj/b", "a.obj~/c"]
    assert (root / "a.obj").read_bytes() == b"a"
    assert (root / "a" / "b.obj").read_bytes() == b"a/b"
    for key in keys:
        store.delete(key)
    assert list(root.iterdir()) == []


def test_delete_prunes_empty_directories_but_keeps_root(root: Path, store: FileObjectStore) -> None:
    store.put("x/y/z/leaf", b"1")
    store.put("x/keep", b"2")
    store.delete("x/y/z/leaf")
    assert sorted(os.listdir(root / "x")) == ["keep.obj"]
    store.delete("x/keep")
    assert root.is_dir()
    assert list(root.iterdir()) == []


def test_writers_survive_concurrent_pruning(store: FileObjectStore) -> None:
    errors: list[BaseException] = []

    def churn(i: int) -> None:
        try:
            for j in range(200):
                key = f"deep/er/still/{i}-{j}"
                store.put(key, b"x")
                store.delete(key)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors[:3]
    assert list(store.list()) == []


def test_list_walks_only_the_prefix_subtree(
    store: FileObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ["data/2024/a", "data/2024/b", "data/2025/c", "logs/x", "other/y/z"]:
        store.put(key, b"1")
    scanned: list[str] = []
    real_scandir = os.scandir

    def spy(path: str) -> Iterator[os.DirEntry[str]]:
        scanned.append(os.path.relpath(path, store.root))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", spy)
    assert [i.key for i in store.list("data/2024/")] == ["data/2024/a", "data/2024/b"]
    assert scanned == ["data/2024"]
    scanned.clear()
    assert [i.key for i in store.list("data/202")] == ["data/2024/a", "data/2024/b", "data/2025/c"]
    assert scanned == ["data", "data/2024", "data/2025"]
    scanned.clear()
    assert list(store.list("nothing/here/")) == []
    assert scanned == []


def test_list_prefix_with_impossible_segments_is_empty(store: FileObjectStore) -> None:
    store.put("a/b", b"1")
    for prefix in ["../", "/a", "a//", "./a", "a/../a/"]:
        assert list(store.list(prefix)) == []


def test_overlong_segment_is_an_invalid_key(store: FileObjectStore) -> None:
    with pytest.raises(InvalidKeyError, match="segment"):
        store.put("x" * 300, b"1")
    store.put("y" * 251, b"ok")  # 251 + ".obj" is exactly NAME_MAX
    assert store.get("y" * 251) == b"ok"


def test_head_reports_mtime(store: FileObjectStore) -> None:
    store.put("k", b"abc")
    info = store.head("k")
    assert info.size == 3
    assert info.last_modified == pytest.approx(os.stat(Path(store.root) / "k.obj").st_mtime)


def test_unclosed_temp_root_is_removed_when_the_store_is_collected() -> None:
    store = FileObjectStore()
    root = store.root
    store.put("k", b"v")
    del store
    gc.collect()
    assert not os.path.exists(root)


def test_forked_copy_does_not_remove_the_parent_root(tmp_path: Path) -> None:
    victim = tmp_path / "parent-root"
    victim.mkdir()
    file_module._remove_tree(str(victim), owner_pid=os.getpid() + 1)
    assert victim.is_dir()
    file_module._remove_tree(str(victim), owner_pid=os.getpid())
    assert not victim.exists()
