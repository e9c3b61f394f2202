#!/usr/bin/env bash
# Mutation score of the modules that compute the tables' numbers (`make mutation`).
# cosmic-ray rewrites a module in place for each mutant, so it works on a copy of the
# tracked files in a temporary folder, never on this checkout. Prints each config's
# totals and its surviving mutants; benchmarks/mutation/equivalent.md reviews them.
#   bash benchmarks/mutation/run.sh [fast|data ...]   (default: fast data)
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
export PATH="$repo/.venv/bin:$PATH"
python -c 'import cosmic_ray' 2>/dev/null || pip install --quiet cosmic-ray==8.7.0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$repo" && git ls-files -z | xargs -0 tar -cf - | tar -xf - -C "$work")
cd "$work"
for name in "${@:-fast data}"; do
    for config in $name; do
        echo "== $config: $(sed -n 's/^test-command = //p' "$repo/benchmarks/mutation/$config.toml")"
        cosmic-ray init "$repo/benchmarks/mutation/$config.toml" "$config.sqlite"
        cosmic-ray exec "$repo/benchmarks/mutation/$config.toml" "$config.sqlite" >/dev/null 2>&1
        cr-report --show-diff "$config.sqlite" | grep -A14 'SURVIVED' | grep -E '^(\+\+\+ |[-+][^-+])' || true
        cr-report "$config.sqlite" | tail -n 3
    done
done
