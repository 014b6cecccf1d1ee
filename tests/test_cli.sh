#!/bin/sh
# test_cli.sh: what a newcomer types first. Every tool and subcommand answers --help on stdout
# with exit 0 (also after the subcommand: "iv2-cache verify --help" is a question, not a
# folder); a wrong option, a missing value or a bad number is one line naming the option, with
# a non-zero exit. Needs no video and no cache: each case fails before opening anything.
cd "$(dirname "$0")/.." || exit 1
for t in iv2-extract iv2-cache iv2-distill iv2-manifest iv2-weights; do
  [ -x bin/$t ] || { echo "skipped: bin/$t not built"; exit 77; }
done
d=$(mktemp -d) || exit 1
trap 'rm -rf "$d"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails+1)); }

# --help: exit 0, a usage line on stdout, nothing on stderr
for c in "iv2-extract" "iv2-extract decode" "iv2-cache" "iv2-cache info" "iv2-cache verify" "iv2-cache merge" \
         "iv2-cache export-view" "iv2-distill" "iv2-distill train" "iv2-distill eval" "iv2-distill export" \
         "iv2-distill plot" "iv2-manifest" "iv2-manifest check" "iv2-manifest import" "iv2-weights" \
         "iv2-weights init" "iv2-weights info" "iv2-weights convert" "iv2-weights plan"; do
  set -- $c
  tool=$1; shift
  bin/$tool "$@" --help > "$d/out" 2> "$d/err" || fail "$c --help: exit $?"
  grep -q "^usage: $tool" "$d/out" || fail "$c --help: no usage on stdout: $(head -c 200 "$d/out")"
  [ -s "$d/err" ] && fail "$c --help: stderr: $(head -c 200 "$d/err")"
done

# bad input: non-zero exit, and the last line names the option and what is wrong
# (cases as: expected text | command)
while IFS='|' read -r want cmd; do
  [ -n "$cmd" ] || continue
  out=$(eval "bin/$cmd" 2>&1) && { fail "$cmd: accepted"; continue; }
  echo "$out" | tail -n 1 | grep -q -- "$want" || fail "$cmd: last line lacks '$want': $(echo "$out" | tail -n 1)"
done <<EOF
--time-limit abc: want seconds|iv2-extract --manifest m --cache c --time-limit abc
unknown option '--bogus'|iv2-extract --bogus
--manifest needs a value|iv2-extract --manifest
unknown option --bogus|iv2-extract decode x.mp4 --bogus
unknown option --bogus|iv2-extract decode x.mp4 --bogus 3
--frames: '2.5' is not an integer|iv2-extract decode x.mp4 --frames 2.5
--seed -3: want a whole number from 0 to 2^53|iv2-extract decode x.mp4 --seed -3
--seed 9007199254740993: want a whole number|iv2-extract decode x.mp4 --seed 9007199254740993
--views 2 with --deterministic: its views of a row are all the same|iv2-extract --deterministic --views 2 --manifest m --cache c --teacher internvit=preset:internvit-tiny
--seed -1: want a whole number|iv2-extract --seed -1 --manifest m --cache c
--seed 1700000000000000000: want a whole number|iv2-extract --seed 1700000000000000000 --manifest m --cache c
--frame needs a value|iv2-extract decode x.mp4 --frame
unknown command 'bogus'|iv2-cache bogus
verify: --sample needs a value|iv2-cache verify $d --sample
verify: --sample 'x'|iv2-cache verify $d --sample x
verify: unknown option '--bogus'|iv2-cache verify $d --bogus
export-view: --out needs a value|iv2-cache export-view $d 0 --out
unknown argument '--bogus'|iv2-distill --bogus
unknown command 'bogus'|iv2-distill bogus
--cache needs a value|iv2-distill --cache
unknown command 'bogus'|iv2-weights bogus
--seed 'abc'|iv2-weights init --preset iv2-tiny --seed abc -o $d/x.safetensors
--batch 'x': want a positive integer|iv2-weights plan --preset iv2-1b --batch x
unknown --format foo|iv2-manifest import --format foo x.csv
import needs --format|iv2-manifest import x.csv
import needs an input list|iv2-manifest import --format kinetics
check: which manifest|iv2-manifest check
EOF

[ $fails -eq 0 ] || exit 1
echo "ok"
