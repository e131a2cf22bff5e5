"""The Hugging Face route and the conversions: dataset files through the hub cache, whole datasets as one CSV,
and GLUE's MRPC files built from the Microsoft release.

`hub_file` goes through `huggingface_hub.hf_hub_download` (HF_ENDPOINT, HF_HUB_OFFLINE and the hub cache apply,
read at call time); `hub_dataset` through `datasets`, always on the hub (`hf://datasets/`), never from a
same-named folder of the working directory. Both ask the run's `Transfers` whether the endpoint answers, so a
dead endpoint costs one connection attempt per run.
"""
from __future__ import annotations

import csv
import os
import urllib.parse
from pathlib import Path

from bench.data.download import Interrupted, Transfers, Unreachable
from bench.data.manifest import hub_site
from bench.errors import BenchError, DataError


def hub_file(t: Transfers, repo: str, path: str, revision: str | None) -> Path:
    """A file of a dataset repo through the hub cache (HF_ENDPOINT, HF_HUB_OFFLINE, HF_HUB_CACHE apply, read at
    call time)."""
    endpoint = hub_site()
    host = urllib.parse.urlsplit(endpoint).netloc
    local_only = t.offline or not t.reachable(endpoint)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(hf_hub_download(repo, path, repo_type="dataset", revision=revision, endpoint=endpoint,
                                    cache_dir=os.environ.get("HF_HUB_CACHE") or None,
                                    local_files_only=local_only, etag_timeout=t.timeout))
    except LocalEntryNotFoundError:
        if not local_only:
            t.down[host] = "no connection"
        raise Unreachable("offline and not in the Hugging Face cache" if t.offline else
                          f"{host} unreachable ({t.down.get(host)}) and not in the Hugging Face cache") from None
    except (RepositoryNotFoundError, EntryNotFoundError) as e:
        raise BenchError(f"{repo}/{path} not found on {endpoint}: {str(e).splitlines()[0]}") from None
    except OSError as e:  # e.g. a transfer that kept failing after huggingface_hub's own resumes
        raise Interrupted(f"{repo}/{path}: {e}; rerun to resume") from None


def hub_dataset(t: Transfers, repo: str, revision: str | None):
    """A whole dataset through `datasets` (online only: offline, `datasets` would need HF_HUB_OFFLINE set before
    it is imported, which a caller cannot rely on)."""
    if t.offline:
        raise Unreachable("offline")
    if not t.reachable(hub_site()):
        raise Unreachable(f"{urllib.parse.urlsplit(hub_site()).netloc} unreachable")
    import datasets

    try:  # hf://datasets/ makes `datasets` look only on the hub, never in a same-named local folder
        return datasets.load_dataset(f"hf://datasets/{repo}", revision=revision)
    except ConnectionError as e:
        raise Unreachable(f"{repo}: {e}") from None
    except Exception as e:  # datasets raises many kinds; the message is what matters
        raise BenchError(f"{repo}: could not load the dataset ({type(e).__name__}: {str(e).splitlines()[0]})") from None


def drop_from_hub_cache(path: Path) -> None:
    """Forget a cached hub file with unexpected bytes (its snapshot link and blob) so a rerun downloads it again."""
    try:
        blob = path.resolve()
        path.unlink(missing_ok=True)
        if blob != path:
            blob.unlink(missing_ok=True)
    except OSError:
        pass


# ---- conversions ---------------------------------------------------------------------------------------------
def mrpc_split(msr_train: Path, msr_test: Path, dev_ids: Path, which: str, out: Path) -> None:
    """GLUE's MRPC files from the Microsoft release, exactly as GLUE's download_glue_data.py writes them: train.tsv
    and dev.tsv split msr_paraphrase_train.txt by the pairs in dev_ids.tsv (header kept), test.tsv numbers the
    rows of msr_paraphrase_test.txt and drops the label."""
    with open(dev_ids, encoding="utf-8") as f:
        dev = {tuple(line.strip().split("\t")) for line in f}
    src = msr_test if which == "test" else msr_train
    with open(src, encoding="utf-8") as f, open(out, "x", encoding="utf-8", newline="\n") as o:
        header = f.readline()
        if which == "test":
            o.write("index\t#1 ID\t#2 ID\t#1 String\t#2 String\n")
        else:
            o.write(header if header.endswith("\n") else header + "\n")
        for idx, row in enumerate(f):
            fields = row.strip().split("\t")
            if len(fields) != 5:
                raise DataError(f"{src} line {idx + 2}: expected 5 tab-separated fields, got {len(fields)}")
            label, id1, id2, s1, s2 = fields
            if which == "test":
                o.write(f"{idx}\t{id1}\t{id2}\t{s1}\t{s2}\n")
            elif ((id1, id2) in dev) == (which == "dev"):
                o.write(f"{label}\t{id1}\t{id2}\t{s1}\t{s2}\n")


def dataset_to_csv(dataset, out: Path) -> None:
    """All splits of a `datasets.DatasetDict` as one CSV, with a `split` column when the rows have none."""
    with open(out, "x", encoding="utf-8", newline="") as f:
        writer = None
        for split in dataset:
            for row in dataset[split]:
                row = dict(row)
                row.setdefault("split", split)
                if writer is None:
                    writer = csv.DictWriter(f, fieldnames=list(row), lineterminator="\n")
                    writer.writeheader()
                writer.writerow(row)
