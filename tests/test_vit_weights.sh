#!/bin/sh
# iv2-weights: init is deterministic and loads back as its preset; info lists the tensors and
# names what does not fit another model; plan prints the documented sizes; bad input fails
# with a one-line reason.
cd "$(dirname "$0")/.." || exit 1
W=bin/iv2-weights
[ -x $W ] || { echo "skipped: $W not built"; exit 77; }
d=$(mktemp -d) || exit 1
trap 'rm -rf "$d"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

$W --help | grep -q "iv2-weights init" || fail "--help"
$W init --preset iv2-tiny --seed 7 -o "$d/a.safetensors" >/dev/null || fail "init"
$W init --preset iv2-tiny --seed 7 -o "$d/b.safetensors" >/dev/null || fail "init again"
cmp -s "$d/a.safetensors" "$d/b.safetensors" || fail "same seed, different files"
$W init --preset iv2-tiny --seed 8 -o "$d/c.safetensors" >/dev/null || fail "init seed 8"
cmp -s "$d/a.safetensors" "$d/c.safetensors" && fail "seed ignored"

out=$($W info "$d/a.safetensors") || fail "info: $out"
echo "$out" | grep -q "blocks.5.attn.q_norm.weight  *F32  *\[96\]" || fail "info lists tensors: $out"
echo "$out" | grep -q "parameters 964736" || fail "info parameter count"
echo "$out" | grep -q "loads as iv2-tiny" || fail "info load check"

# a bf16 VideoMAE with a config override; loading it as the student names the tensors
$W init --preset videomae-tiny --config '{"depth": 2}' --dtype bf16 -o "$d/v.safetensors" >/dev/null || fail "init bf16"
$W info "$d/v.safetensors" | grep -q "encoder.blocks.1.attn.v_bias  *BF16" || fail "bf16 listing"
err=$($W info "$d/v.safetensors" --model iv2-tiny 2>&1) && fail "wrong model accepted"
echo "$err" | grep -q "missing tensors: 'cls_token'" || fail "missing named: $err"
echo "$err" | grep -q "unexpected tensors: 'encoder.blocks" || fail "unexpected named: $err"

# documented sizes (teachers.md §5): InternViT-6B + clip_projector 5.936 G params = 22.11 GiB fp32
$W plan --preset internvit-6b | grep -q "weights 22.11 GiB" || fail "plan internvit-6b"
$W plan --preset videomae-g | grep -q "weights 3.77 GiB" || fail "plan videomae-g"
# training plan of the 1B student at 8 x 417 tokens (the arena itself is checked to the byte by
# test_vit_recompute): recomputing every block, bf16, and the largest batch in 80 GiB
out=$($W plan --preset iv2-1b --batch 8 --tokens 417 --train --recompute --dtype bf16 --mem 80 2>&1)
echo "$out" | grep -q "AdamW 11.41 GiB, activations 798.8 MiB (batch 8 x 417 tokens, saved for backward, 40 blocks recomputed)" \
  || fail "plan --train --recompute: $out"
echo "$out" | grep -q "in 80.0 GiB: 673 with 40 blocks recomputed (97 recomputing none, 673 all)" || fail "plan --mem: $out"
$W plan --preset iv2-1b --train --recompute lots >/dev/null 2>&1 && fail "plan --recompute lots accepted"

# an official-format InternVL-C .pth ({'module': ...}, text tower) converts and loads
$W convert tests/goldens/internvit_rs_c.pth -o "$d/c.safetensors" --model internvit --check internvit-tiny \
  --config '{"img":8,"patch":4,"width":40,"depth":1,"heads":5,"mlp":72,"pool_heads":4,"pool_dim":24}' \
  > "$d/conv.txt" 2>&1 || fail "convert: $(cat "$d/conv.txt")"
grep -q "loads as internvit-tiny" "$d/conv.txt" || fail "convert check: $(cat "$d/conv.txt")"
err=$($W convert tests/goldens/internvit_rs_c.pth -o "$d/c2.safetensors" --model internvit --check internvit-tiny 2>&1) \
  && fail "converted file accepted by the wrong config"
echo "$err" | grep -q "bad tensors: .* has shape \[40\], want \[96\]" || fail "wrong-config message: $err"
[ "$(echo "$err" | grep -o "'blocks.0.attn.k_norm.weight'" | wc -l)" = 1 ] || fail "a tensor of the wrong shape is listed twice (missing and bad): $err"

# -o naming the input is refused (the checkpoint being read would be replaced); a --check preset
# that does not exist is refused before anything is written
cp tests/goldens/internvit_rs_c.pth "$d/self.pth"
err=$($W convert "$d/self.pth" -o "$d/self.pth" --model internvit 2>&1) && fail "convert over its own input accepted"
echo "$err" | grep -q "is the input" || fail "self-overwrite message: $err"
cmp -s "$d/self.pth" tests/goldens/internvit_rs_c.pth || fail "the input was changed"
$W convert "$d/self.pth" -o "$d/c3.safetensors" --model internvit --check bogus >/dev/null 2>&1 && fail "--check bogus accepted"
[ -e "$d/c3.safetensors" ] && fail "--check bogus: the output was written first"

err=$($W convert "$d/self.pth" "$d/self.pth" -o "$d/c4.safetensors" --model internvit 2>&1) && fail "a shard twice accepted"
echo "$err" | grep -q "is given twice" || fail "a shard twice: $err"
mkfifo "$d/pipe.st" && { $W convert "$d/self.pth" -o "$d/pipe.st" --model internvit >/dev/null 2>&1 && fail "-o a pipe accepted"
  [ -p "$d/pipe.st" ] || fail "-o replaced a pipe"; }

# bad input: one line, non-zero
err=$($W init --preset nope -o "$d/x.safetensors" 2>&1) && fail "unknown preset accepted"
echo "$err" | grep -q "unknown model preset 'nope'" || fail "unknown preset message: $err"
err=$($W init --preset iv2-tiny --config '{"heads": 7}' -o "$d/x.safetensors" 2>&1) && fail "bad config accepted"
echo "$err" | grep -q "heads" || fail "bad config message: $err"
printf 'garbage' > "$d/g.safetensors"
err=$($W info "$d/g.safetensors" 2>&1) && fail "garbage accepted"
[ "$(echo "$err" | wc -l)" -eq 1 ] || fail "one-line error: $err"
err=$($W convert "$d/none.pth" -o "$d/x.safetensors" --model videomae 2>&1) && fail "missing .pth accepted"
echo "$err" | grep -q "none.pth" || fail "convert error names the file: $err"
err=$($W frobnicate 2>&1) && fail "unknown command accepted"
echo "$err" | grep -q "unknown command 'frobnicate'" || fail "unknown command not named: $err"
# numbers are numbers: "abc" is an error, not seed 0 or batch 1
err=$($W init --preset iv2-tiny --seed abc -o "$d/x.safetensors" 2>&1) && fail "--seed abc accepted"
echo "$err" | grep -q "seed 'abc'" || fail "--seed abc message: $err"
for bad in "--batch x" "--batch 2.5" "--batch 0" "--tokens 417x" "--train --mem 8g"; do
  err=$($W plan --preset iv2-1b $bad 2>&1) && fail "plan $bad accepted"
  echo "$err" | grep -q "want a positive" || fail "plan $bad message: $err"
done
err=$($W plan --preset iv2-1b --mem 80 2>&1) && fail "plan --mem without --train accepted"
echo "$err" | grep -q "are for --train" || fail "--mem without --train message: $err"

# a checkpoint in HF shards converts into one file: every shard's tensors (not only the last's)
F=tests/fixtures/pth
$W convert $F/pytorch_model-00001-of-00002.bin $F/pytorch_model-00002-of-00002.bin -o "$d/sh.safetensors" \
  --model internvit >/dev/null 2>&1 || fail "convert shards"
$W info "$d/sh.safetensors" | grep "^  " > "$d/sh.txt"
$W info $F/shards.keep.safetensors | grep "^  " > "$d/sh_want.txt"
cmp -s "$d/sh.txt" "$d/sh_want.txt" || fail "shards: $(cat "$d/sh.txt")"
echo "ok"
exit 0
