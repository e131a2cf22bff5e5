"""`bench data fetch` against a misbehaving mirror (issue 17, item 4): what a source may send is bounded by the
package's manifest (sizes, paths, hashes), never by the source.

A local HTTP server on 127.0.0.1 plays the mirror; each path is served by a function that may lie about sizes,
drip bytes, or answer a Range request with another file's bytes. It counts the body bytes it managed to send.
Each test writes its own small manifest (BENCH_DATA_MANIFEST). No test touches the internet."""
from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import stat
import threading
import time
import urllib.parse
import zipfile
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import huggingface_hub  # noqa: F401  imported before any test sets HF_HUB_OFFLINE (read once, at import)
import pytest

from cli_helpers import run_bench

URL = "https://data.example.org/files/table.csv"
KEY = "/data.example.org/files/table.csv"  # where --mirror MIRROR reads URL from
BODY = bytes(range(256)) * 1710 + b"tail"  # 437,764 bytes, like crows_pairs_anonymized.csv
assert len(BODY) == 437_764


class Server:
    """path -> handler(request, range_header); `sent` counts the body bytes written per path."""

    def __init__(self):
        self.routes: dict = {}
        self.sent: Counter = Counter()
        self.log: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                path = urllib.parse.urlsplit(self.path).path
                rng = self.headers.get("Range")
                server.log.append((path, rng))
                route = server.routes.get(path)
                if route is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                try:
                    route(self, rng)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_HEAD = do_GET

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def write(self, req, path: str, data: bytes) -> None:
        req.wfile.write(data)
        req.wfile.flush()
        self.sent[path] += len(data)

    def static(self, path: str, data: bytes) -> None:
        """A well-behaved file server (200, or 206 for a Range request)."""

        def serve(req, rng):
            start = int(rng.split("=")[1].split("-")[0]) if rng else 0
            req.send_response(206 if rng else 200)
            req.send_header("Content-Length", str(len(data) - start))
            if rng:
                req.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            req.end_headers()
            self.write(req, path, data[start:])

        self.routes[path] = serve

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server():
    s = Server()
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "BENCH_DATA_MIRROR", "BENCH_DATA_MANIFEST"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))


def _manifest(tmp_path, monkeypatch, files: str, extra: str = "") -> Path:
    """A manifest with group g; `files` that start with a top-level key (file = ...) come before the tables."""
    path = tmp_path / "manifest.toml"
    head, files = (files, "") if files.startswith("file =") else ("", files)
    path.write_text('version = 1\n' + head + '[groups.g]\nlicence = "x"\n' + extra + files)
    monkeypatch.setenv("BENCH_DATA_MANIFEST", str(path))
    return path


def _entry(path="t/table.csv", url=URL, data=BODY, **fields) -> str:
    lines = ["[[file]]", f'path = "{path}"', 'group = "g"', f'url = "{url}"']
    if data is not None:
        lines += [f"size = {len(data)}", f'sha256 = "{hashlib.sha256(data).hexdigest()}"']
    lines += [f"{k} = {json.dumps(v)}" for k, v in fields.items()]
    return "\n".join(lines) + "\n"


def _fetch(server, data, *more, capsys):
    return run_bench(["data", "fetch", "--data-dir", data, "--mirror", server.url, "--no-progress", *more], capsys)


# ---- size caps while streaming --------------------------------------------------------------------------------
HUGE = 300 * 1000 * 1000


@pytest.mark.parametrize("announce", [True, False], ids=["content-length", "no-content-length"])
def test_an_answer_larger_than_the_manifest_size_is_cut_off(server, tmp_path, monkeypatch, capsys, announce):
    """A 300 MB answer for a 437,764-byte file: with its Content-Length it is refused before the body is read;
    without one, reading stops one byte past the manifest's size. Either way the mirror gets to send only a
    few socket buffers' worth, and nothing is kept."""
    _manifest(tmp_path, monkeypatch, _entry())
    block = b"x" * (1 << 16)

    def flood(req, rng):
        req.send_response(200)
        if announce:
            req.send_header("Content-Length", str(HUGE))
        req.end_headers()
        while server.sent[KEY] < HUGE:
            server.write(req, KEY, block)

    server.routes[KEY] = flood
    data = tmp_path / "d"
    t0 = time.perf_counter()
    code, _, err = _fetch(server, data, capsys=capsys)
    assert code == 1 and time.perf_counter() - t0 < 20
    assert "more than the manifest's 437764" in err and "Traceback" not in err
    time.sleep(0.2)  # let the server notice the closed connection
    assert server.sent[KEY] < 16 * (1 << 20)  # socket buffers, not 300 MB
    assert not (data / "t" / "table.csv").exists() and not list(data.rglob("*.part"))


def test_a_file_without_a_known_size_is_capped_by_max_size(server, tmp_path, monkeypatch, capsys):
    _manifest(tmp_path, monkeypatch, _entry(path="t/notes.txt", data=None, max_size=1000))
    server.static(KEY, b"a" * 5000)
    data = tmp_path / "d"
    code, _, err = _fetch(server, data, capsys=capsys)
    assert code == 1 and "more than the manifest's 1000" in err
    assert not (data / "t" / "notes.txt").exists()


# ---- archives ------------------------------------------------------------------------------------------------
ARCHIVE_URL = "https://data.example.org/files/bundle.zip"
ARCHIVE_KEY = "/data.example.org/files/bundle.zip"


def _zip_bomb(member: str, expands_to: int) -> bytes:
    """A zip whose member expands to `expands_to` zero bytes (deflated: about a thousandth of that)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        with z.open(member, "w", force_zip64=True) as f:
            zeros = bytes(1 << 20)
            for _ in range(expands_to >> 20):
                f.write(zeros)
    return buf.getvalue()


def _archive_manifest(tmp_path, monkeypatch, archive: bytes, member_data: bytes, member="B/train.tsv"):
    extra = (f'[archives.bundle]\nurl = "{ARCHIVE_URL}"\nsize = {len(archive)}\n'
             f'sha256 = "{hashlib.sha256(archive).hexdigest()}"\n')
    files = (f'[[file]]\npath = "b/train.tsv"\ngroup = "g"\narchive = "bundle"\nmember = "{member}"\n'
             f'size = {len(member_data)}\nsha256 = "{hashlib.sha256(member_data).hexdigest()}"\n')
    _manifest(tmp_path, monkeypatch, files, extra)


def test_a_zip_member_that_expands_to_1_gib_is_refused_before_extraction(server, tmp_path, monkeypatch, capsys):
    bomb = _zip_bomb("B/train.tsv", 1 << 30)
    _archive_manifest(tmp_path, monkeypatch, bomb, b"label\tsentence\n1\tok\n")
    server.static(ARCHIVE_KEY, bomb)
    data = tmp_path / "d"
    code, _, err = _fetch(server, data, capsys=capsys)
    assert code == 1
    assert f"is {1 << 30} bytes, the manifest says 20; nothing was extracted" in err
    assert not (data / "b").exists() and not (data / ".partial").exists()  # not a byte extracted, nothing left


def test_a_zip_member_whose_header_lies_is_still_cut_at_the_cap(server, tmp_path, monkeypatch, capsys):
    """The member's header says 20 bytes (the manifest's size) while its data inflates to 64 MiB."""
    good = b"label\tsentence\n1\tok\n"
    bomb = bytearray(_zip_bomb("B/train.tsv", 64 << 20))
    cd = bomb.rfind(b"PK\x01\x02")  # the central directory entry: its uncompressed size is at offset 24
    assert int.from_bytes(bomb[cd + 24:cd + 28], "little") == 64 << 20
    bomb[cd + 24:cd + 28] = len(good).to_bytes(4, "little")
    bomb = bytes(bomb)
    assert zipfile.ZipFile(io.BytesIO(bomb)).getinfo("B/train.tsv").file_size == len(good)
    _archive_manifest(tmp_path, monkeypatch, bomb, good)
    server.static(ARCHIVE_KEY, bomb)
    data = tmp_path / "d"
    code, _, err = _fetch(server, data, capsys=capsys)
    assert code == 1 and "Traceback" not in err
    assert not (data / "b" / "train.tsv").exists() and not list(data.rglob("*.part"))


def test_a_zip_member_that_is_a_symlink_is_refused(server, tmp_path, monkeypatch, capsys):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        info = zipfile.ZipInfo("B/train.tsv")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(info, "/etc/passwd")
    _archive_manifest(tmp_path, monkeypatch, buf.getvalue(), b"/etc/passwd")
    server.static(ARCHIVE_KEY, buf.getvalue())
    data = tmp_path / "d"
    code, _, err = _fetch(server, data, capsys=capsys)
    assert code == 1 and "is not a regular file" in err
    assert not (data / "b" / "train.tsv").exists()


def test_an_archive_left_in_partial_by_an_earlier_run_is_not_trusted(server, tmp_path, monkeypatch, capsys):
    """Whoever can write to the data folder could leave an archive there; it is downloaded and checked again."""
    def zipped(content: bytes) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("B/names.csv", content)
        return buf.getvalue()

    good, evil = zipped(b"name,gender\nAnna,F\n"), zipped(b"name,gender\nPLANTED,M\n")
    _manifest(tmp_path, monkeypatch, '[[file]]\npath = "b/names.csv"\ngroup = "g"\narchive = "bundle"\n'
                                     'member = "B/names.csv"\nsize = 19\n',
              f'[archives.bundle]\nurl = "{ARCHIVE_URL}"\nsize = {len(good)}\n')
    data = tmp_path / "d"
    for name in ("bundle", "bundle.zip"):
        (data / ".partial" / "archives").mkdir(parents=True, exist_ok=True)
        (data / ".partial" / "archives" / name).write_bytes(evil)
    server.static(ARCHIVE_KEY, good)
    code, _, err = _fetch(server, data, capsys=capsys)
    assert code == 0, err
    assert (data / "b" / "names.csv").read_bytes() == b"name,gender\nAnna,F\n" and server.sent[ARCHIVE_KEY] == len(good)


def test_an_archive_member_path_outside_the_data_dir_is_a_manifest_error(tmp_path, monkeypatch, capsys):
    _manifest(tmp_path, monkeypatch, '[[file]]\npath = "b/x.tsv"\ngroup = "g"\narchive = "a"\nmember = "../../x"\n'
                                     'size = 3\n', f'[archives.a]\nurl = "{ARCHIVE_URL}"\nsize = 10\n')
    code, _, err = run_bench(["data", "fetch", "--data-dir", tmp_path / "d"], capsys)
    assert code == 2 and "member must be a relative path inside the archive" in err


# ---- an overall deadline per file ------------------------------------------------------------------------------
def _drip(server, path, *, headers_first: bool, seconds=0.5, most=40):
    """Answers 1 byte every `seconds` (at most `most` bytes, so that a client without a deadline ends too)."""

    def serve(req, rng):
        if headers_first:
            req.send_response(200)
            req.send_header("Content-Length", "1000")
            req.end_headers()
            req.wfile.flush()
            payload = b"x" * most
        else:
            payload = b"HTTP/1.0 200 OK\r\nX-Slow: " + b"y" * most
        for i in range(min(most, len(payload))):
            server.write(req, path, payload[i:i + 1])
            time.sleep(seconds)

    server.routes[path] = serve


@pytest.mark.parametrize("headers_first", [True, False], ids=["body", "headers"])
def test_a_server_dripping_bytes_is_given_up_at_the_files_deadline(server, tmp_path, monkeypatch, capsys,
                                                                   headers_first):
    """--timeout 1 and a 1,000-byte file: the deadline is 1 s + 1000/65536 s; a server that sends a byte every
    0.5 s (never tripping the socket timeout) is cut off there, retries included."""
    _manifest(tmp_path, monkeypatch, _entry(data=b"z" * 1000))
    _drip(server, KEY, headers_first=headers_first)
    data = tmp_path / "d"
    t0 = time.perf_counter()
    code, _, err = _fetch(server, data, "--timeout", "1", capsys=capsys)
    elapsed = time.perf_counter() - t0
    assert code == 1 and elapsed < 8, elapsed  # ~1 s; a client without a deadline runs 20 s and more
    assert "not complete within its deadline of 1 s" in err
    assert not (data / "t" / "table.csv").exists()


def test_fetch_help_documents_the_deadline(capsys):
    code, out, _ = run_bench(["data", "fetch", "--help"], capsys)
    assert code == 0 and "TIMEOUT + 1 s per 64 KiB" in " ".join(out.split())


# ---- Range answers ---------------------------------------------------------------------------------------------
OTHER = b"O" * len(BODY)  # another file of the mirror


def _resume_setup(server, tmp_path, monkeypatch, bad_answer):
    """A part holding the first half of BODY; the first Range request gets `bad_answer`, later ones a proper
    file server."""
    _manifest(tmp_path, monkeypatch, _entry())
    data = tmp_path / "d"
    part = data / ".partial" / "t" / "table.csv.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(BODY[: len(BODY) // 2])
    server.static(KEY, BODY)
    good = server.routes[KEY]

    def serve(req, rng):
        if rng and not server.log[:-1] and bad_answer:
            bad_answer(req, rng)
        else:
            good(req, rng)

    server.routes[KEY] = serve
    return data


def _partial_answer(content_range):
    def answer(req, rng):
        body = OTHER[: len(BODY) // 2]
        req.send_response(206)
        req.send_header("Content-Length", str(len(body)))
        if content_range:
            req.send_header("Content-Range", content_range)
        req.end_headers()
        req.wfile.write(body)

    return answer


half = len(BODY) // 2


@pytest.mark.parametrize("content_range", [
    f"bytes 0-{half - 1}/{half}",  # another file altogether
    f"bytes {half}-{len(BODY) * 2 - 1}/{len(BODY) * 2}",  # right offset, wrong total
    f"bytes 100-{len(BODY) - 1}/{len(BODY)}",  # wrong offset
    None,  # no Content-Range at all
], ids=["other-file", "wrong-total", "wrong-start", "missing"])
def test_a_range_answer_that_does_not_continue_the_file_starts_over(server, tmp_path, monkeypatch, capsys,
                                                                    content_range):
    data = _resume_setup(server, tmp_path, monkeypatch, _partial_answer(content_range))
    code, _, err = _fetch(server, data, capsys=capsys)
    assert code == 0, err
    assert (data / "t" / "table.csv").read_bytes() == BODY  # nothing of OTHER spliced in
    assert [r for _, r in server.log] == [f"bytes={half}-", None]  # the second request starts from zero


def test_a_valid_range_answer_still_resumes(server, tmp_path, monkeypatch, capsys):
    data = _resume_setup(server, tmp_path, monkeypatch, None)
    code, _, err = _fetch(server, data, capsys=capsys)
    assert code == 0, err
    assert (data / "t" / "table.csv").read_bytes() == BODY
    assert [r for _, r in server.log] == [f"bytes={half}-"]
    assert server.sent[KEY] == len(BODY) - half  # only the missing half was sent


def test_an_unverified_file_is_never_resumed_nor_placed_malformed(server, tmp_path, monkeypatch, capsys):
    """dev.json has no verified hash (and no exact size): a leftover part is discarded rather than resumed (a
    spliced file could not be checked), and a file that is not JSON is not placed."""
    dev = json.dumps({"version": "1.0", "data": {"intrasentence": []}}).encode()
    _manifest(tmp_path, monkeypatch, _entry(path="stereoset/dev.json", data=None, max_size=100_000))
    data = tmp_path / "d"
    part = data / ".partial" / "stereoset" / "dev.json.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(dev[:10])

    def serve(req, rng):
        body = b"<html>not the file</html>" if rng else dev  # a Range request would get another file's bytes
        req.send_response(206 if rng else 200)
        req.send_header("Content-Length", str(len(body)))
        if rng:
            req.send_header("Content-Range", f"bytes 10-{10 + len(body) - 1}/{10 + len(body)}")
        req.end_headers()
        req.wfile.write(body)

    server.routes[KEY] = serve
    code, out, err = _fetch(server, data, capsys=capsys)
    assert code == 0, err
    assert [r for _, r in server.log] == [None]
    assert json.loads((data / "stereoset" / "dev.json").read_bytes()) == json.loads(dev)

    # a source that sends something that is not JSON: rejected, not placed as "fetched unverified"
    (data / "stereoset" / "dev.json").unlink()
    server.static(KEY, dev[:-3])
    code, out, err = _fetch(server, data, capsys=capsys)
    assert code == 1 and "not valid JSON" in err
    assert not (data / "stereoset" / "dev.json").exists()


# ---- manifest paths confined, schema validated ---------------------------------------------------------------
@pytest.mark.parametrize("path", ["../outside.txt", "a/../../outside.txt", "ABSOLUTE", ".partial/x.txt", "a//b",
                                  "a\\\\..\\\\b"])
def test_manifest_paths_outside_the_data_dir_are_refused_when_read(server, tmp_path, monkeypatch, capsys, path):
    outside = tmp_path / "outside.txt"
    path = str(outside) if path == "ABSOLUTE" else path
    _manifest(tmp_path, monkeypatch, _entry(path=path, data=b"pwned"))
    server.static(KEY, b"pwned")
    code, _, err = _fetch(server, tmp_path / "d" / "data", capsys=capsys)
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "data manifest" in err
    assert ("path must be a relative path inside the data directory" in err or
            ".partial is bench's download folder" in err)
    assert not outside.exists() and server.log == []


@pytest.mark.parametrize("body, message", [
    ('[[file]]\npath = "a.txt"\ngroup = "g"\nurl = "https://x.org/a"\nsize = "big"\n', "size must be a whole number"),
    ('[[file]]\npath = "a.txt"\ngroup = "g"\nurl = "https://x.org/a"\nsize = 3\nsha256 = 5\n', "sha256 must be 64"),
    ('[[file]]\npath = 7\ngroup = "g"\n', "path must be a relative path"),
    ('[[file]]\npath = "a.txt"\ngroup = "g"\nurl = "not a url"\nsize = 3\n', "url must be an http(s) URL"),
    ('[[file]]\npath = "a.txt"\ngroup = "g"\nurl = "http://[::1"\nsize = 3\n', "url must be an http(s) URL"),
    ('[[file]]\npath = "a.txt"\ngroup = "g"\nurl = "https://x.org/a"\n', "needs size or max_size"),
    ('[[file]]\npath = "a.txt"\ngroup = "g"\nhub = "../evil"\nhub_path = "a"\nsize = 3\n', "hub must be a"),
    ('[[file]]\npath = "a.txt"\ngroup = "g"\nconvert = "glue-mrpc-dev"\ninputs = "x"\nsize = 3\n', "inputs must be"),
    ('[[file]]\npath = "a.txt"\ngroup = "nope"\n', "unknown group 'nope'"),
    ('file = 3\n', "file must be a list"),
    ('file = [3]\n', "must be a table"),
    ('[archives."../x"]\nurl = "https://x.org/a"\nsize = 1\n', "the name must be"),
    ('[archives.a]\nurl = "https://x.org/a"\n', "needs size or max_size"),
    ('[inputs.a]\nsize = 3\n', "needs url"),
    ('[[file]]\npath = "a.txt"\ngroup = "g"\nsize = 3\nverified = "yes"\n', "verified must be true or false"),
    ('[[file]]\npath = "a.txt"\ngroup = "g"\nfoo = 1\n', "unknown field 'foo'"),
    ('[[file]]\npath = "a.txt"\ngroup = "g"\nsize = 3\n[[file]]\npath = "a.txt"\ngroup = "g"\nsize = 3\n',
     "listed twice"),
])
def test_a_malformed_manifest_is_a_one_line_error(tmp_path, monkeypatch, capsys, body, message):
    _manifest(tmp_path, monkeypatch, body)
    for args in (["data", "fetch", "--data-dir", tmp_path / "d"], ["data", "list", "--files"]):
        code, _, err = run_bench(args, capsys)
        assert code == 2 and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: data manifest") and message in err, err
    assert not (tmp_path / "d").exists()


def test_groups_of_the_wrong_type_are_a_one_line_error(tmp_path, monkeypatch, capsys):
    path = tmp_path / "m.toml"
    path.write_text('groups = ["a"]\n')
    monkeypatch.setenv("BENCH_DATA_MANIFEST", str(path))
    code, _, err = run_bench(["data", "list"], capsys)
    assert code == 2 and err.startswith("error: data manifest") and "[groups] must be a table" in err


def test_the_shipped_manifest_bounds_every_download():
    from bench.data.manifest import load_manifest

    m = load_manifest()
    assert all(e.cap for e in m.files)
    assert all(spec.get("size") or spec.get("max_size") for spec in [*m.archives.values(), *m.inputs.values()])


# ---- no symlink followed where bench writes, renames or deletes ------------------------------------------------
def _victim(tmp_path) -> Path:
    victim = tmp_path / "victim"
    for rel in ("archives/keep.zip", "inputs/keep", "keep.txt", "t/table.csv.part"):
        (victim / rel).parent.mkdir(parents=True, exist_ok=True)
        (victim / rel).write_text("precious")
    return victim


def _victim_intact(victim: Path) -> None:
    files = {p.relative_to(victim).as_posix(): p.read_text() for p in victim.rglob("*") if p.is_file()}
    assert files == {r: "precious" for r in ("archives/keep.zip", "inputs/keep", "keep.txt", "t/table.csv.part")}


def test_a_symlinked_partial_folder_is_refused_and_its_target_untouched(server, tmp_path, monkeypatch, capsys):
    _manifest(tmp_path, monkeypatch, _entry())
    server.static(KEY, BODY)
    victim = _victim(tmp_path)
    data = tmp_path / "d"
    data.mkdir()
    (data / ".partial").symlink_to(victim)
    code, _, err = _fetch(server, data, capsys=capsys)
    assert code == 2 and "is a symbolic link" in err and "Traceback" not in err
    _victim_intact(victim)
    assert server.log == []


@pytest.mark.parametrize("link, target", [
    ("t", "."),  # the file's folder: the download would land in the victim's folder
    ("t/table.csv", "nothing-here"),  # the file itself, dangling: os.replace would put the file there
    (".partial/t", "t"),  # a folder of partial downloads: the victim's .part would be resumed and deleted
    (".partial/t/table.csv.part", "keep.txt"),  # the part itself: appended to, then deleted
])
def test_a_symlink_on_the_way_to_a_file_is_refused(server, tmp_path, monkeypatch, capsys, link, target):
    _manifest(tmp_path, monkeypatch, _entry())
    server.static(KEY, BODY)
    victim = _victim(tmp_path)
    data = tmp_path / "d"
    (data / link).parent.mkdir(parents=True, exist_ok=True)
    (data / link).symlink_to(victim / target)
    code, _, err = _fetch(server, data, capsys=capsys)
    assert code == 1 and "is a symbolic link" in err and "Traceback" not in err
    _victim_intact(victim)
    assert not (victim / "nothing-here").exists() and server.log == []


# ---- the hub route never reads the working directory ----------------------------------------------------------
def test_the_hub_dataset_route_ignores_a_same_named_local_folder(server, tmp_path, monkeypatch, capsys):
    """`datasets.load_dataset("aieng-lab/namexact")` loads ./aieng-lab/namexact when such a folder exists; the
    fetch must ask the hub only. `datasets` is put in its offline mode (the hub route then fails at once,
    while a local folder would still load), and bench's own reachability check sees the local server."""
    datasets = pytest.importorskip("datasets")
    cwd = tmp_path / "cwd"
    (cwd / "aieng-lab" / "namexact").mkdir(parents=True)
    (cwd / "aieng-lab" / "namexact" / "train.csv").write_text("name,gender\nPLANTED,M\n")
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    _manifest(tmp_path, monkeypatch, '[[file]]\npath = "gradiend/namexact.csv"\ngroup = "g"\n'
                                     'hub = "aieng-lab/namexact"\nconvert = "hub-dataset-csv"\nmax_size = 100000\n')
    data = tmp_path / "d"
    code, _, err = run_bench(["data", "fetch", "--data-dir", data], capsys)
    assert code == 1 and "gradiend/namexact.csv" in err and "Traceback" not in err
    assert not (data / "gradiend" / "namexact.csv").exists()
    assert not [p for p in tmp_path.rglob("*.csv") if "PLANTED" in p.read_text() and cwd not in p.parents]


# ---- bad --data-dir and --mirror: one-line usage errors -------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["--data-dir", "AFILE/sub"], "Invalid value for '--data-dir'"),
    (["--data-dir", "AFILE"], "Invalid value for '--data-dir'"),
    (["--mirror", "not a url"], "Invalid value for '--mirror': 'not a url' is not an http(s) URL"),
    (["--mirror", "http://[::1"], "Invalid value for '--mirror': 'http://[::1' is not an http(s) URL"),
    (["--mirror", "ftp://host/x"], "is not an http(s) URL"),
])
def test_bad_data_dir_and_mirror_are_usage_errors(tmp_path, capsys, args, message):
    afile = tmp_path / "afile"
    afile.write_text("x")
    args = [str(a).replace("AFILE", str(afile)) for a in args]
    if "--data-dir" not in args:
        args += ["--data-dir", str(tmp_path / "d")]
    code, _, err = run_bench(["data", "fetch", "crows", *args], capsys)
    assert code == 2 and "Traceback" not in err and message in err, err
    error_lines = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1 and ("pass a folder" in err or "e.g. --mirror https://" in err)
    assert not (tmp_path / "d").exists() and afile.read_text() == "x"
