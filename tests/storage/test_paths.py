"""``dog_jax.storage`` paths: URLs kept whole, local paths absolute, atomic writes, folders on buckets."""

import os

from dog_jax import storage


def test_urls_are_kept_and_local_paths_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.join("gs://b/run", "checkpoints", "3") == "gs://b/run/checkpoints/3"
    assert storage.absolute("gs://b/run") == "gs://b/run" and storage.is_url("gs://b/run")
    assert storage.join("run", "x") == os.path.join(str(tmp_path), "run", "x")
    assert storage.absolute("~/x") == os.path.join(os.path.expanduser("~"), "x")
    assert os.fspath(storage.run_path("gs://b/run") / "config.json") == "gs://b/run/config.json"


def test_local_writes_are_atomic_and_leave_no_temporary_file(tmp_path):
    target = tmp_path / "summary.json"
    storage.write_text(target, "old")
    storage.write_text(target, "new")
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["summary.json"]


def test_files_under_walks_every_level(tmp_path):
    for name in ("a/1", "a/b/2", "3"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    assert [os.path.relpath(p, tmp_path) for p in storage.files_under(tmp_path)] == ["3", "a/1", "a/b/2"]


def test_on_a_bucket(bucket, gcs_server):
    name = bucket.removeprefix("gs://")
    storage.make_dirs(f"{bucket}/run/eval")  # nothing to create: prefixes
    assert gcs_server.objects(name) == []
    storage.write_text(f"{bucket}/run/a/1.json", "{}")
    storage.write_bytes(f"{bucket}/run/a/b/2.bin", b"\x00")
    assert [os.fspath(p) for p in storage.files_under(f"{bucket}/run")] == [f"{bucket}/run/a/1.json",
                                                                          f"{bucket}/run/a/b/2.bin"]
    storage.move(f"{bucket}/run/a", f"{bucket}/aside/a")
    assert sorted(gcs_server.objects(name)) == ["aside/a/1.json", "aside/a/b/2.bin"]
    assert storage.read_text(f"{bucket}/aside/a/1.json") == "{}"
    # A missing bucket is never created by making folders in it.
    storage.make_dirs("gs://dog-jax-never-created/run")
    assert "dog-jax-never-created" not in {b["name"] for b in gcs_server.request("GET", "/storage/v1/b")["items"]}
