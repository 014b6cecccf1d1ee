# extract_common.sh: the set-up shared by the iv2-extract CLI tests (sourced, not run).
# Needs T set to the test's scratch folder; gives check, digest and the tiny teachers.
set -u
cd "$(dirname "$0")/.." || exit 1
command -v ffmpeg >/dev/null 2>&1 || { echo "skipped: no ffmpeg CLI"; exit 77; }
for b in bin/iv2-extract bin/iv2-cache; do [ -x $b ] || { echo "$b missing (run make)"; exit 1; }; done
rm -rf $T
mkdir -p $T
export IV2_QUIET=1 OMP_NUM_THREADS=1
fails=0
exec 3>&1   # the test's stdout: a check's FAIL line is seen also when its command's output is sent away
check() { # check "what" command... (a redirection after it applies to the command, not to FAIL)
    what=$1; shift
    if "$@"; then :; else echo "FAIL: $what" >&3; fails=$((fails + 1)); fi
}
IVIT='internvit=preset:internvit-tiny:1:{"img":112}'
MAE='videomae=preset:videomae-tiny:2:{"img":112}'
digest() { ./bin/iv2-cache verify "$1" 2>/dev/null | sed -n 's/.*digest \([0-9a-f]*\).*/\1/p'; }
# counts a cache holds (iv2-cache info), and the numbers of a metrics file's lines of one event:
# jnum F EVENT FIELD (one a line), jsum F EVENT FIELD (their sum)
nviews() { ./bin/iv2-cache info "$1" 2>/dev/null | sed -n 's/^views \([0-9]*\)$/\1/p'; }
nerrors() { ./bin/iv2-cache info "$1" 2>/dev/null | sed -n 's/^errors \([0-9]*\)$/\1/p'; }
jnum() { sed -n "/\"event\":\"$2\"/s/.*\"$3\":\([0-9]*\).*/\1/p" "$1"; }
jsum() { jnum "$@" | awk '{ s += $1 } END { print s + 0 }'; }
