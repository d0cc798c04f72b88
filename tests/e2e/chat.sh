#!/usr/bin/env bash
# tests/e2e/chat.sh KILN MODEL ADAPTERS_DIR — `kiln chat`, end to end, on the default model.
# A conversation piped in (two questions, adapter switches back and forth, bad commands):
#  * the answers are right ("Paris", then "Rome" from the follow-up that needs the history);
#  * a later turn prefills only what the conversation added (the reply's tokens reused);
#  * the replies are the same with every turn prefilled whole (--no-prefix-reuse) and with
#    DS2D decoding (greedy): prefix reuse and the truncation it rests on change nothing;
#  * /adapter switches without recompiling (the pirate adapter's "Arr!" from the turn after
#    the switch), a resident adapter comes back without a load, and a bad path is an error
#    that leaves the conversation going on the adapter it had;
#  * a conversation longer than the context drops its oldest messages and goes on.
set -euo pipefail
kiln=$1
model=$2
adapters=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; for f in "$tmp"/*.out "$tmp"/*.err; do echo "== $f"; cat "$f"; done; exit 1; }

conv="What is the capital of France? Answer in one sentence.
And of Italy?
/adapter $adapters/pirate
Tell me about the sea.
/adapter $tmp/no-such-adapter
What is the moon?
/adapter $adapters/shouting
What is your name?
/adapter $adapters/pirate
And the sun?
/adapter none
/bogus
Thanks!"
run() {  # name, options...
  local name=$1; shift
  printf '%s\n' "$conv" | "$kiln" chat "$model" --ctx 1024 --max-tokens 32 "$@" > "$tmp/$name.out" 2> "$tmp/$name.err" ||
    fail "kiln chat $* exited with $?"
}
run reuse
run whole --no-prefix-reuse
run ds2d --ds2d
[ "$(grep -c . "$tmp/reuse.out")" -ge 7 ] || fail "expected 7 replies"
sed -n 1p "$tmp/reuse.out" | grep -q "Paris" || fail "first reply lacks Paris"
sed -n 2p "$tmp/reuse.out" | grep -q "Rome" || fail "the follow-up reply lacks Rome"
sed -n 3p "$tmp/reuse.out" | grep -q "^Arr!" || fail "the reply after /adapter pirate does not start with Arr!"
grep -q "prompt: [0-9]* new tokens ([1-9][0-9]* reused)" "$tmp/reuse.err" || fail "no turn reused the history's tokens"
grep -q "\[kiln\] adapter: pirate (slot 1, scale 1) | switch [0-9.]* ms, loaded in" "$tmp/reuse.err" || fail "no load of pirate"
grep -q "\[kiln\] adapter: pirate (slot 1, scale 1) | switch [0-9.]* ms$" "$tmp/reuse.err" ||
  fail "switching back to the resident pirate adapter loaded it again"
grep -q "no-such-adapter.*(still on pirate)" "$tmp/reuse.err" || fail "a bad adapter path is not reported"
grep -q "unknown command /bogus" "$tmp/reuse.err" || fail "an unknown command is not reported"
cmp -s "$tmp/reuse.out" "$tmp/whole.out" || { diff "$tmp/reuse.out" "$tmp/whole.out"; fail "prefix reuse changed a reply"; }
cmp -s "$tmp/reuse.out" "$tmp/ds2d.out" || { diff "$tmp/reuse.out" "$tmp/ds2d.out"; fail "DS2D changed a reply"; }

# One slot: a new adapter replaces the stream's own (the stream on the base model while it
# loads); a bad scale changes nothing; a bad --adapter at the start is an error.
printf 'What is the capital of France? Answer in one sentence.\n/adapter %s nan\n/adapter %s\nTell me about the sea.\n' \
    "$adapters/shouting" "$adapters/shouting" |
  "$kiln" chat "$model" --ctx 512 --max-tokens 16 --adapter-slots 1 --adapter "$adapters/pirate" \
    > "$tmp/slot.out" 2> "$tmp/slot.err" || fail "kiln chat --adapter-slots 1 exited with $?"
sed -n 1p "$tmp/slot.out" | grep -q "^Arr!" || fail "--adapter pirate did not style the first reply"
grep -q "adapter scale nan is not a number in \[-100, 100\] (still on pirate)" "$tmp/slot.err" || fail "a nan scale was taken"
sed -n 2p "$tmp/slot.out" | grep -q "^[A-Z ,.!']*$" || fail "the reply after /adapter shouting is not upper case"
if "$kiln" chat "$model" --ctx 512 --max-tokens 16 --adapter "$tmp/none" < /dev/null > /dev/null 2> "$tmp/bad.err"; then
  fail "a bad --adapter did not fail"
fi
grep -q "none: cannot open" "$tmp/bad.err" || fail "a bad --adapter is not named"

# With an --artifact, its own LoRA slots (here none: /adapter says so, the chat goes on).
"$kiln" compile "$model" -o "$tmp/art" --ctx 256 --quiet 2>/dev/null
printf '/adapter %s\nWhat is the capital of France? Answer in one sentence.\n' "$adapters/pirate" |
  "$kiln" chat "$model" --artifact "$tmp/art" --ctx 256 --max-tokens 16 > "$tmp/art.out" 2> "$tmp/art.err" ||
  fail "kiln chat --artifact exited with $?"
grep -q "compiled without LoRA slots" "$tmp/art.err" || fail "/adapter on an artifact without slots is not explained"
grep -q "Paris" "$tmp/art.out" || fail "no answer from the artifact"

# A small context: the oldest messages go, the conversation goes on.
printf 'Tell me about the moon.\nTell me about the sea.\nTell me about the sun.\nWhat is the capital of France?\n' |
  "$kiln" chat "$model" --ctx 160 --max-tokens 40 --adapter-slots 0 > "$tmp/small.out" 2> "$tmp/small.err" ||
  fail "kiln chat --ctx 160 exited with $?"
grep -q "context full: the oldest [0-9]* messages left the conversation" "$tmp/small.err" || fail "no context-full note"
[ "$(grep -c . "$tmp/small.out")" -ge 4 ] || fail "the small-context conversation stopped"
# A message that cannot fit even alone is refused, and the next one answered.
long=$(printf 'word %.0s' $(seq 1 200))
printf '%s\nWhat is the capital of France? Answer in one sentence.\n' "$long" |
  "$kiln" chat "$model" --ctx 160 --max-tokens 40 --adapter-slots 0 > "$tmp/long.out" 2> "$tmp/long.err" ||
  fail "kiln chat with a long message exited with $?"
grep -q "exceeds the context of 160" "$tmp/long.err" || fail "a too-long message is not reported"
grep -q "Paris" "$tmp/long.out" || fail "no answer after a refused message"
echo "kiln chat: replies the same with prefix reuse, without it and with DS2D; adapters switched"
