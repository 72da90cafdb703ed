"""Assemble Debian's fortune packages into JSONL: the demo's real multilingual raw corpus.

    python data/fortunes/build.py            # -> data/cache/fortunes/jsonl/<package>.jsonl

Each package is fetched once with `apt-get download` (no install, no root needed for the
download itself) into `data/cache/fortunes/debs/`, unpacked with `dpkg-deb -x`, and every
fortune (entries are separated by a line holding `%`) becomes one JSON line:
`{"id": "fortunes-zh/tang300#12", "text": ..., "source": "fortunes-zh"}`. The language is NOT
written: finding it is the corpus stage's job. Re-running reuses the cached downloads.
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--cache", type=Path, default=Path(__file__).resolve().parents[1] / "cache" / "fortunes"
    )
    build(parser.parse_args().cache)


if __name__ == "__main__":
    main()
