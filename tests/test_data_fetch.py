"""`bench data fetch | verify | list` (issue 12) against a local mirror of real files from the shared data folder.

A small HTTP server on 127.0.0.1 serves (a) plain URLs as `--mirror` rewrites them (`/host/path`) and (b) the
Hugging Face layout that `hf_hub_download` asks for (HEAD and GET `/datasets/{repo}/resolve/{revision}/{path}`
with the X-Repo-Commit and ETag headers it requires; HF_ENDPOINT points at the server). It honours Range
requests, can drop a connection midway the first time a path is read, and can flip one byte of a file.
No test touches the internet."""
from __future__ import annotations

import hashlib
import io
import os
import socket
import threading
import time
import urllib.parse
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import huggingface_hub  # noqa: F401  imported here, before any test sets HF_HUB_OFFLINE (read once, at import)
import pytest

from bench.data.manifest import load_manifest
from cli_helpers import run_bench

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
GROUPS = {"stereoset", "crows", "seat", "glue", "superglue", "gradiend", "corpus"}
HUB_REPO = "bench-mirror/data"
COMMIT = "0123456789abcdef0123456789abcdef01234567"

needs_shared = pytest.mark.skipif(not (SHARED / "seat").is_dir(), reason=f"shared data not found at {SHARED}")


class Mirror:
    """Files by URL path; a request log of (method, path, Range header)."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.drop_once: set[str] = set()
        self.corrupt: set[str] = set()
        self.log: list[tuple[str, str, str | None]] = []
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self._serve(head=True)

            def do_GET(self):
                self._serve(head=False)

            def _serve(self, head: bool):
                path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
                rng = self.headers.get("Range")
                mirror.log.append((self.command, path, rng))
                data = mirror.files.get(path)
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if path in mirror.corrupt:
                    i = len(data) // 2
                    data = data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                body = data[start:]
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                if "/resolve/" in path:  # what hf_hub_download requires of a hub endpoint
                    self.send_header("X-Repo-Commit", COMMIT)
                    self.send_header("ETag", '"' + hashlib.sha1(mirror.files[path]).hexdigest() + '"')
                self.end_headers()
                if head:
                    return
                if path in mirror.drop_once:
                    mirror.drop_once.discard(path)
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add_url(self, url: str, data: bytes) -> str:
        u = urllib.parse.urlsplit(url)
        self.files[f"/{u.netloc}{u.path}"] = data
        return f"/{u.netloc}{u.path}"

    def add_hub(self, path: str, data: bytes) -> str:
        key = f"/datasets/{HUB_REPO}/resolve/main/{path}"
        self.files[key] = data
        return key

    def gets(self, key: str):
        return [r for r in self.log if r[0] == "GET" and r[1] == key]

    def stop(self):
        if self.thread.is_alive():
            self.server.shutdown()
            self.server.server_close()
            self.thread.join()


@pytest.fixture()
def mirror():
    m = Mirror()
    yield m
    m.stop()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "BENCH_DATA_MIRROR", "BENCH_DATA_MANIFEST"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))


def _real_entries(*groups):
    return load_manifest().select(groups)


def _serve_real(mirror: Mirror, entries) -> None:
    for e in entries:
        mirror.add_url(e.url, (SHARED / e.path).read_bytes())


def _same_tree(data: Path, entries) -> None:
    for e in entries:
        assert (data / e.path).read_bytes() == (SHARED / e.path).read_bytes(), e.path
    assert not (data / ".partial").exists()


# ---- the manifest itself -----------------------------------------------------------------------------------
def test_manifest_covers_the_layout_with_sources_and_says_what_is_unverified():
    m = load_manifest()
    assert set(m.groups) == GROUPS
    paths = [e.path for e in m.files]
    assert len(paths) == len(set(paths))
    for e in m.files:
        assert e.url or e.hub or e.archive or e.convert, e.path
        assert m.licence(e), e.path
        if e.sha256:
            assert len(e.sha256) == 64 and e.verified, e.path
        else:
            assert not e.verified and "no verified hash" in (e.note or ""), e.path
    # rebuilt reference copies: no hash recorded (the manifest says so); byte-identical releases: hashed
    for rebuilt in ("stereoset/dev.json", "gradiend/namexact.csv", "gradiend/namextend.csv"):
        assert m.entry(rebuilt).sha256 is None and "rebuilt" in m.entry(rebuilt).note
    for hashed in ("crows_pairs/crows_pairs_anonymized.csv", "seat/sent-weat6.jsonl", "glue/CoLA/train.tsv",
                   "superglue/BoolQ/train.jsonl", "bias_attribute_words/bias_attribute_words.json"):
        assert m.entry(hashed).sha256, hashed
    assert len(m.select(("seat",))) == 50


@needs_shared
def test_verify_passes_on_the_shared_data_for_every_hashed_file(capsys):
    code, out, err = run_bench(["data", "verify", "--data-dir", SHARED, "--all"], capsys)
    assert code == 0, out + err
    status = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in out.splitlines()
              if line.startswith("| ") and not line.startswith("| file")}
    for e in load_manifest().files:
        if e.sha256 and (SHARED / e.path).is_file():
            assert status[e.path] == "ok", e.path
        elif not e.sha256 and (SHARED / e.path).is_file():
            assert status[e.path] == "unverified", e.path
    assert "mismatch" not in status.values()
    assert status["superglue/BoolQ/train.jsonl"] == "missing"  # PROVENANCE: not in the reference copy


def test_list_shows_groups_sizes_licences_and_sources(capsys):
    code, out, _ = run_bench(["data", "list"], capsys)
    assert code == 0
    for g in GROUPS:
        assert f"| {g}" in out
    assert "CC BY-NC 4.0" in out and "raw.githubusercontent.com" in out and "dl.fbaipublicfiles.com" in out
    code, out, _ = run_bench(["data", "list", "--files", "crows"], capsys)
    assert "crows_pairs/crows_pairs_anonymized.csv" in out and "https://raw.githubusercontent.com/nyu-mll" in out


def test_unknown_group_is_one_clear_error(tmp_path, capsys):
    code, _, err = run_bench(["data", "fetch", "seats", "--data-dir", tmp_path / "d"], capsys)
    assert code == 2 and "unknown data group 'seats'" in err and "superglue" in err
    assert not (tmp_path / "d").exists()


# ---- fetch over plain URLs (the real manifest through --mirror) ---------------------------------------------
@needs_shared
def test_fresh_fetch_writes_the_layout_byte_identical(mirror, tmp_path, capsys):
    entries = _real_entries("crows", "seat")
    _serve_real(mirror, entries)
    data = tmp_path / "bench-data"
    code, out, err = run_bench(["data", "fetch", "crows", "seat", "--data-dir", data, "--mirror", mirror.url], capsys)
    assert code == 0, err
    _same_tree(data, entries)
    assert "| seat" in out and "| crows" in out  # the summary table
    # a second run finds everything in place and downloads nothing
    n = len(mirror.log)
    code, out, _ = run_bench(["data", "fetch", "crows", "seat", "--data-dir", data, "--mirror", mirror.url], capsys)
    assert code == 0 and len(mirror.log) == n
    seat_row = next(line for line in out.splitlines() if line.startswith("| seat"))
    assert [c.strip() for c in seat_row.split("|")][2] == "50"  # present


@needs_shared
def test_interrupted_download_resumes_with_a_range_request(mirror, tmp_path, capsys):
    (e,) = _real_entries("crows")
    key = mirror.add_url(e.url, (SHARED / e.path).read_bytes())
    mirror.drop_once.add(key)
    data = tmp_path / "d"
    args = ["data", "fetch", "crows", "--data-dir", data, "--mirror", mirror.url, "--no-progress"]
    code, _, err = run_bench(args + ["--retries", "0"], capsys)
    assert code == 1 and "interrupted" in err and e.path in err
    part = data / ".partial" / (e.path + ".part")
    assert 0 < part.stat().st_size < e.size and not (data / e.path).exists()
    code, _, err = run_bench(args, capsys)  # the next run continues where the first stopped
    assert code == 0, err
    assert mirror.gets(key)[-1][2] == f"bytes={e.size // 2}-"
    _same_tree(data, [e])


@needs_shared
def test_interruption_within_a_run_is_resumed_in_that_run(mirror, tmp_path, capsys):
    (e,) = _real_entries("crows")
    key = mirror.add_url(e.url, (SHARED / e.path).read_bytes())
    mirror.drop_once.add(key)
    code, _, err = run_bench(["data", "fetch", "crows", "--data-dir", tmp_path, "--mirror", mirror.url], capsys)
    assert code == 0, err
    assert [r[2] for r in mirror.gets(key)] == [None, f"bytes={e.size // 2}-"]
    _same_tree(tmp_path, [e])


@needs_shared
def test_a_corrupted_byte_is_detected_and_the_file_not_placed(mirror, tmp_path, capsys):
    entries = _real_entries("seat")[:3]
    _serve_real(mirror, entries)
    bad = entries[1]
    mirror.corrupt.add(mirror.add_url(bad.url, (SHARED / bad.path).read_bytes()))
    data = tmp_path / "d"
    code, out, err = run_bench(["data", "fetch", "seat", "--data-dir", data, "--mirror", mirror.url], capsys)
    assert code == 1
    assert f"mismatch: {bad.path}" in err and "not placed" in err
    assert not (data / bad.path).exists()
    assert not list(data.rglob("*.part"))  # the bad download is deleted, not kept for a resume
    for good in entries[:1] + entries[2:]:
        assert (data / good.path).read_bytes() == (SHARED / good.path).read_bytes()


@needs_shared
def test_server_down_names_the_missing_files_at_once(tmp_path, capsys, monkeypatch):
    dead = Mirror()
    url = dead.url
    dead.stop()  # nothing listens there any more
    import bench.data.download as download_mod

    calls = []
    real = download_mod.open_url
    monkeypatch.setattr(download_mod, "open_url", lambda *a, **k: calls.append(a) or real(*a, **k))
    entries = _real_entries("crows", "seat")
    t0 = time.perf_counter()
    code, _, err = run_bench(["data", "fetch", "crows", "seat", "--data-dir", tmp_path, "--mirror", url], capsys)
    assert code == 1 and time.perf_counter() - t0 < 10
    assert len(calls) == 1  # one refused connection, not one per file (no retry storm)
    for e in entries:
        assert e.path in err and e.url in err
    assert "unreachable" in err and "51 of 51" in err


def test_offline_mode_attempts_nothing_and_lists_sources(mirror, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    code, out, err = run_bench(["data", "fetch", "crows", "gradiend", "--data-dir", tmp_path / "none", "--mirror",
                             mirror.url], capsys)  # fmt: skip
    assert code == 1 and time.perf_counter() - t0 < 5 and mirror.log == []
    assert "missing (offline)" in err
    assert "crows_pairs/crows_pairs_anonymized.csv  <- https://raw.githubusercontent.com/nyu-mll/crows-pairs" in err
    assert "gradiend/namexact.csv  <- https://huggingface.co/datasets/aieng-lab/namexact" in err
    assert not (tmp_path / "none").exists()


# ---- Hugging Face route, archives and conversions (a manifest pointing at the mirror) ----------------------
def _mrpc_sources() -> dict[str, bytes]:
    """msr_paraphrase_{train,test}.txt as Microsoft ships them (BOM, CRLF), rebuilt from the reference copy's
    GLUE files; the conversion must give those files back byte for byte."""
    g = SHARED / "glue" / "MRPC"
    train = (g / "train.tsv").read_text(encoding="utf-8").splitlines()
    dev = (g / "dev.tsv").read_text(encoding="utf-8").splitlines()
    rows = []
    for i in range(max(len(train), len(dev))):  # interleave: the split must follow dev_ids, not the order
        rows += [r for r in (train[1:][i:i + 1] + dev[1:][i:i + 1])]
    msr_train = "\r\n".join([train[0]] + rows) + "\r\n"
    test = (g / "test.tsv").read_text(encoding="utf-8").splitlines()
    msr_test = "\r\n".join(["\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String"]
                           + ["1\t" + r.split("\t", 1)[1] for r in test[1:]]) + "\r\n"
    return {"train": msr_train.encode(), "test": msr_test.encode(), "ids": (g / "dev_ids.tsv").read_bytes()}


def _test_manifest(tmp_path: Path, mirror: Mirror) -> tuple[Path, dict]:
    real = load_manifest()
    hub_files = ["seat/sent-weat7.jsonl", "seat/sent-weat8.jsonl"]
    wnli = ["glue/WNLI/train.tsv", "glue/WNLI/dev.tsv"]
    mrpc = ["glue/MRPC/train.tsv", "glue/MRPC/dev.tsv", "glue/MRPC/test.tsv"]
    keys = {}
    for p in hub_files:
        keys[p] = mirror.add_hub(p, (SHARED / p).read_bytes())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in wnli:
            z.writestr(p.removeprefix("glue/"), (SHARED / p).read_bytes())
    keys["zip"] = mirror.add_url("https://dl.example.org/glue/WNLI.zip", buf.getvalue())
    src = _mrpc_sources()
    for name, data in src.items():
        keys[name] = mirror.add_url(f"https://dl.example.org/mrpc/{name}", data)
    lines = ['version = 1', '[groups.seat]', 'licence = "CC BY-NC 4.0"', '[groups.glue]', 'licence = "per task"',
             '[archives.glue-WNLI]', 'url = "https://dl.example.org/glue/WNLI.zip"', f"size = {len(buf.getvalue())}"]
    for name, key in (("mrpc-msr-train", "train"), ("mrpc-msr-test", "test"), ("mrpc-dev-ids", "ids")):
        lines += [f"[inputs.{name}]", f'url = "https://dl.example.org/mrpc/{key}"', f"size = {len(src[key])}",
                  f'sha256 = "{hashlib.sha256(src[key]).hexdigest()}"']
    for p in hub_files + wnli + mrpc:
        e = real.entry(p)
        lines += ["[[file]]", f'path = "{p}"', f'group = "{e.group}"', f'sha256 = "{e.sha256}"', "verified = true",
                  f"size = {e.size}"]
        if p in hub_files:
            lines += [f'hub = "{HUB_REPO}"', f'hub_path = "{p}"', 'revision = "main"']
        elif p in wnli:
            lines += ['archive = "glue-WNLI"', f'member = "{p.removeprefix("glue/")}"']
        else:
            lines += [f'convert = "{e.convert}"', 'inputs = ["mrpc-msr-train", "mrpc-msr-test", "mrpc-dev-ids"]']
    path = tmp_path / "manifest.toml"
    path.write_text("\n".join(lines) + "\n")
    return path, keys


@pytest.fixture()
def hub_setup(mirror, tmp_path, monkeypatch):
    if not (SHARED / "glue" / "MRPC").is_dir():
        pytest.skip(f"shared data not found at {SHARED}")
    manifest, keys = _test_manifest(tmp_path, mirror)
    monkeypatch.setenv("BENCH_DATA_MANIFEST", str(manifest))
    monkeypatch.setenv("HF_ENDPOINT", mirror.url)
    return keys


def test_hub_archive_and_mrpc_routes_write_the_layout_byte_identical(hub_setup, mirror, tmp_path, capsys):
    data = tmp_path / "d"
    code, out, err = run_bench(["data", "fetch", "--data-dir", data, "--mirror", mirror.url], capsys)
    assert code == 0, err
    _same_tree(data, load_manifest().files)
    for p in ("seat/sent-weat7.jsonl", "seat/sent-weat8.jsonl"):  # through hf_hub_download: HEAD, then GET
        assert ("HEAD", hub_setup[p], None) in mirror.log and mirror.gets(hub_setup[p])
    assert len(mirror.gets(hub_setup["zip"])) == 1  # one archive download serves all its members
    code, out, err = run_bench(["data", "verify", "--data-dir", data, "--strict"], capsys)
    assert code == 0 and "7 ok, 0 mismatch, 0 missing" in out


def test_hub_download_resumes_and_honours_the_offline_cache(hub_setup, mirror, tmp_path, capsys, monkeypatch):
    key = hub_setup["seat/sent-weat7.jsonl"]
    mirror.drop_once.add(key)
    data = tmp_path / "d"
    code, _, err = run_bench(["data", "fetch", "seat", "--data-dir", data], capsys)
    assert code == 0, err
    assert len(mirror.gets(key)) == 2  # huggingface_hub retried the dropped transfer itself (it resumes with a
    # Range request once a 10 MB chunk has arrived; this file is smaller, so it starts over)
    _same_tree(data, load_manifest().select(("seat",)))
    # offline: the files come from the hub cache, without a request
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    n = len(mirror.log)
    code, _, err = run_bench(["data", "fetch", "seat", "--data-dir", tmp_path / "d2"], capsys)
    assert code == 0, err
    assert len(mirror.log) == n
    _same_tree(tmp_path / "d2", load_manifest().select(("seat",)))


def test_hub_corrupted_file_is_not_placed_and_refetched_next_time(hub_setup, mirror, tmp_path, capsys):
    key = hub_setup["seat/sent-weat8.jsonl"]
    mirror.corrupt.add(key)
    data = tmp_path / "d"
    code, _, err = run_bench(["data", "fetch", "seat", "--data-dir", data], capsys)
    assert code == 1 and "mismatch: seat/sent-weat8.jsonl" in err
    assert not (data / "seat" / "sent-weat8.jsonl").exists() and (data / "seat" / "sent-weat7.jsonl").exists()
    mirror.corrupt.clear()  # the source is repaired: the bad copy was dropped from the hub cache
    code, _, err = run_bench(["data", "fetch", "seat", "--data-dir", data], capsys)
    assert code == 0, err
    _same_tree(data, load_manifest().select(("seat",)))


def test_hub_server_down_is_reported_once_per_host(hub_setup, mirror, tmp_path, capsys):
    mirror.stop()
    t0 = time.perf_counter()
    code, _, err = run_bench(["data", "fetch", "seat", "--data-dir", tmp_path / "d"], capsys)
    assert code == 1 and time.perf_counter() - t0 < 5  # no back-off per file
    assert "seat/sent-weat7.jsonl" in err and "seat/sent-weat8.jsonl" in err and "unreachable" in err


# ---- verify ------------------------------------------------------------------------------------------------
@needs_shared
def test_verify_flags_a_changed_file_and_missing_ones(tmp_path, capsys):
    data = tmp_path / "d"
    entries = _real_entries("seat")
    for e in entries:
        (data / e.path).parent.mkdir(parents=True, exist_ok=True)
        (data / e.path).write_bytes((SHARED / e.path).read_bytes())
    code, out, _ = run_bench(["data", "verify", "seat", "--data-dir", data], capsys)
    assert code == 0 and "50 ok, 0 mismatch" in out
    changed = data / entries[4].path
    content = bytearray(changed.read_bytes())
    content[10] ^= 0x20
    changed.write_bytes(bytes(content))
    (data / entries[7].path).unlink()
    (data / "seat" / "notes.txt").write_text("mine")
    code, out, err = run_bench(["data", "verify", "seat", "--data-dir", data], capsys)
    assert code == 1 and "1 mismatch" in out and "1 missing" in out and "1 extra" in out
    assert f"| {entries[4].path}" in out and "mismatch" in out and "bench data fetch seat" in err
    (data / entries[4].path).write_bytes((SHARED / entries[4].path).read_bytes())
    code, out, err = run_bench(["data", "verify", "seat", "--data-dir", data], capsys)
    assert code == 0  # missing and extra files are reported; they fail only with --strict
    code, out, err = run_bench(["data", "verify", "seat", "--data-dir", data, "--strict"], capsys)
    assert code == 1 and "1 missing, 1 extra" in err


# ---- a run that lacks a file names the fetch group --------------------------------------------------------
def test_require_file_names_the_fetch_group(tmp_path):
    from bench.data.paths import require_file
    from bench.errors import DataError

    with pytest.raises(DataError, match=r"`bench data fetch seat --data-dir .*` downloads it"):
        require_file(tmp_path, "seat/sent-weat6.jsonl", "SEAT test")
    with pytest.raises(DataError, match=r"bench data fetch crows --data-dir DIR"):
        require_file(None, "crows_pairs/crows_pairs_anonymized.csv")
    with pytest.raises(DataError, match=r"bench data list --files"):
        require_file(tmp_path, "mine/own.txt")


@needs_shared
def test_bench_run_without_a_file_says_which_group_provides_it(tmp_path, capsys):
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    tok = SHARED / "models" / "bert-base-uncased-tokenizer"
    model = tmp_path / "tiny"
    cfg = BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64)  # fmt: skip
    BertForMaskedLM(cfg).save_pretrained(model)
    BertTokenizerFast.from_pretrained(tok).save_pretrained(model)
    (tmp_path / "data").mkdir()
    code, _, err = run_bench(["run", "--models", model, "--metrics", "seat", "--data-dir", tmp_path / "data",
                           "--cache-dir", tmp_path / "c", "--out", tmp_path / "run"], capsys)  # fmt: skip
    assert code == 2 and "Traceback" not in err
    assert f"bench data fetch seat --data-dir {tmp_path / 'data'}" in err.strip().splitlines()[-1]


def test_hub_dataset_csv_conversion(mirror, monkeypatch, tmp_path):
    """NAMExact/NAMExtend come as Hugging Face datasets: every split lands in one CSV with a `split` column."""
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_ENDPOINT", mirror.url)  # reachable; `datasets.load_dataset` itself is replaced
    from bench.data.download import Transfers

    splits = {"train": [("Bryant", "M"), ("Anna", "F")], "test": [("Mia", "F")]}
    dd = datasets.DatasetDict({s: datasets.Dataset.from_dict({"name": [n for n, _ in rows],
                                                              "gender": [g for _, g in rows]})
                               for s, rows in splits.items()})  # fmt: skip
    seen = []
    monkeypatch.setattr(datasets, "load_dataset", lambda repo, revision=None: seen.append((repo, revision)) or dd)
    manifest = tmp_path / "m.toml"
    manifest.write_text('[groups.gradiend]\nlicence = "x"\n[[file]]\npath = "gradiend/namexact.csv"\n'
                        'group = "gradiend"\nhub = "aieng-lab/namexact"\nconvert = "hub-dataset-csv"\n'
                        'max_size = 100000\n')
    from bench.data.fetch import fetch

    out = fetch(tmp_path / "d", manifest=load_manifest(manifest), transfers=Transfers(tmp_path / "d" / ".partial"))
    assert [o.status for o in out] == ["unverified"] and seen == [("hf://datasets/aieng-lab/namexact", None)]
    assert (tmp_path / "d" / "gradiend" / "namexact.csv").read_text() == \
        "name,gender,split\nBryant,M,train\nAnna,F,train\nMia,F,test\n"
