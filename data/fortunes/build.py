"""Assemble Debian's fortune packages into JSONL: the demo's real multilingual raw corpus.

    python data/fortunes/build.py            # -> data/cache/fortunes/jsonl/<package>.jsonl
    python data/fortunes/build.py --sample   # also rewrite data/fortunes/sample.jsonl

Each package is fetched once with `apt-get download` (no install, no root needed for the
download itself) into `data/cache/fortunes/debs/`, unpacked with `dpkg-deb -x`, and every
fortune (entries are separated by a line holding `%`) becomes one JSON line:
`{"id": "fortunes-zh/tang300#12", "text": ..., "source": "fortunes-zh"}`. The language is NOT
written: finding it is the corpus stage's job. Re-running reuses the cached downloads.

`--sample` rewrites the small committed slice the tests use: 60 well-formed fortunes per
language (120-900 characters, no two similar), labelled with the
package's language, minus two entries that are not in that language (a Latin poem in
fortunes-de, ASCII art in fortunes-es).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

PACKAGES = ("fortunes", "fortunes-zh", "fortunes-de", "fortunes-ru", "fortunes-es", "fortunes-it")
"""English, Chinese (incl. 313 Tang poems in `tang300`), German, Russian, Spanish, Italian."""
LANGUAGES = {"fortunes": "en", "fortunes-zh": "zh", "fortunes-de": "de", "fortunes-ru": "ru",
             "fortunes-es": "es", "fortunes-it": "it"}  # fmt: skip
NOT_IN_PACKAGE_LANGUAGE = {
    "fortunes-de/fortunes/de/zitate#7400",
    "fortunes-es/fortunes/es/varios.fortunes#14",
}
SAMPLE = Path(__file__).with_name("sample.jsonl")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def download(package: str, debs: Path) -> Path:
    """The cached .deb of a package, fetched with `apt-get download` when missing."""
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        subprocess.run(["apt-get", "download", package], cwd=debs, check=True)
        found = sorted(debs.glob(f"{package}_*.deb"))
    return found[-1]


def fortune_files(root: Path) -> list[Path]:
    """The fortune text files of an unpacked package (not the .dat indexes, links or the `off/` set)."""
    games = root / "usr" / "share" / "games"
    return sorted(
        p
        for p in games.rglob("*")
        if p.is_file()
        and not p.is_symlink()
        and p.suffix != ".dat"
        and "off" not in p.relative_to(games).parts
    )


def entries(path: Path) -> list[str]:
    """The fortunes of one file: blocks separated by `%` lines, ANSI colour codes stripped."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # a few old German files
    text = ANSI.sub("", text).replace("\r\n", "\n")
    blocks = re.split(r"^%\s*$", text, flags=re.MULTILINE)
    return [b.strip("\n").rstrip() for b in blocks if b.strip()]


def build(cache: Path) -> list[Path]:
    """Download, unpack and convert every package; returns the JSONL files."""
    out_dir = cache / "jsonl"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for package in PACKAGES:
        deb = download(package, cache / "debs")
        root = cache / "raw" / package
        if not root.exists():
            root.mkdir(parents=True)
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        out = out_dir / f"{package}.jsonl"
        tmp = out.with_suffix(".tmp")
        count = 0
        with tmp.open("w", encoding="utf-8") as f:
            for path in fortune_files(root):
                name = path.relative_to(root / "usr" / "share" / "games").as_posix()
                for i, text in enumerate(entries(path)):
                    record = {"id": f"{package}/{name}#{i}", "text": text, "source": package}
                    f.write(json.dumps(record, ensure_ascii=False) + "\n")
                    count += 1
        tmp.replace(out)
        written.append(out)
        print(f"{out}: {count} fortunes", file=sys.stderr)
    return written


def write_sample(jsonl_dir: Path, per_language: int = 60) -> None:
    """The test slice (see the module docstring), deterministic given the packages."""
    import hashlib

    from align.corpus.text import shingles

    chosen: list[dict] = []
    for package, lang in LANGUAGES.items():
        records = [json.loads(line) for line in (jsonl_dir / f"{package}.jsonl").open(encoding="utf-8")]
        shortest = 120 if lang == "zh" else 250
        records = [
            r for r in records
            if shortest <= len(r["text"]) <= 900 and r["id"] not in NOT_IN_PACKAGE_LANGUAGE
        ]  # fmt: skip
        records.sort(key=lambda r: hashlib.md5(r["id"].encode()).hexdigest())
        if lang == "zh":  # some Tang poems first
            tang = [r for r in records if "tang300" in r["id"]][:15]
            records = tang + [r for r in records if "tang300" not in r["id"]]
        picked: list[set[str]] = []
        for r in records:
            grams = set(shingles(r["text"]))
            if any(len(grams & other) / len(grams | other) > 0.3 for other in picked):
                continue
            picked.append(grams)
            chosen.append({**r, "lang": lang})
            if len(picked) == per_language:
                break
    with SAMPLE.open("w", encoding="utf-8") as f:
        for r in chosen:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{SAMPLE}: {len(chosen)} fortunes", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--cache", type=Path, default=Path(__file__).resolve().parents[1] / "cache" / "fortunes"
    )
    parser.add_argument("--sample", action="store_true", help="also rewrite data/fortunes/sample.jsonl")
    args = parser.parse_args()
    build(args.cache)
    if args.sample:
        write_sample(args.cache / "jsonl")


if __name__ == "__main__":
    main()
