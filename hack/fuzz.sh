#!/usr/bin/env bash
# Runs every fuzz target for a short while (FUZZTIME, 10s by default), so
# that CI catches regressions; run longer by hand with FUZZTIME=5m.
#
# New inputs are not minimized (FUZZMINIMIZETIME=0): in a run this short
# minimizing only costs time, and Go's fuzzing engine reported a run that
# found nothing as failed ("context deadline exceeded") when its deadline
# fell while a worker was minimizing. Once it held both workers at 0
# execs/s for the whole run. A target that still ends that way, with no
# failing input written, runs once more; a real failure writes its input
# under testdata/fuzz and fails at once.
set -euo pipefail
cd "$(dirname "$0")/.."
go=${GO:-go}
fuzztime=${FUZZTIME:-10s}
minimize=${FUZZMINIMIZETIME:-0}
for spec in $(grep -rl --include='*_test.go' '^func Fuzz' . | grep -v '^./tools/'); do
	dir=$(dirname "$spec")
	for f in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$spec" | sed 's/^func //'); do
		for try in 1 2; do
			echo "fuzz $dir $f"
			if out=$("$go" test -run='^$' -fuzz="^$f\$" -fuzztime="$fuzztime" -fuzzminimizetime="$minimize" "$dir" 2>&1); then
				echo "$out"
				break
			fi
			echo "$out"
			if [[ $try == 1 ]] && grep -q 'context deadline exceeded' <<<"$out" && ! grep -q 'Failing input written' <<<"$out"; then
				echo "fuzz: $f stopped at the engine's own deadline with no failing input; running it again"
				continue
			fi
			exit 1
		done
	done
done
