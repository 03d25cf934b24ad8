# TaskForge tasks. `./run <recipe>` bootstraps .venv first; `just <recipe>` works inside it.
set shell := ["bash", "-euo", "pipefail", "-c"]

export PATH := justfile_directory() + "/.venv/bin:" + env_var("PATH")

# the same as check
default: check

# API + worker + scheduler in one process, in memory, on HTTP_ADDR (default :8080)
dev *args:
    taskforge dev {{args}}

# the whole test suite; it finds (or starts) its own Postgres and Redis (README, Tests)
test *args:
    pytest {{args}}

# unit tests only: no services needed
unit *args:
    pytest tests/unit {{args}}

# ruff: lint rules and formatting
lint:
    ruff check .
    ruff format --check .

# ruff: fix what can be fixed and reformat
fmt:
    ruff check --fix .
    ruff format .

# mypy --strict over the package and the tests
typecheck:
    mypy -p taskforge
    mypy tests

# lint, types and the whole test suite: what CI runs (.ci/run)
check: lint typecheck test

# end to end: the compose stack when Docker answers, else local Postgres and Redis
integration:
    bash scripts/integration-test.sh

# fault injection on private servers, every scenario (~7 min); --profile ci, --scenario S, --seed N, --list
faults *args:
    python -m tests.faults {{args}}

# the benchmark (README, Performance); add --quick for a short run
bench *args:
    taskforge bench {{args}}

# TaskForge beside pgqueuer and dramatiq, medians of interleaved runs (README, Performance); --runs N, --passes N, --jobs N
bench-peers *args:
    # The peers live in .venv-peers, from scripts/peers/requirements.txt (pinned, hashes checked).
    if [[ ! -x .venv-peers/bin/python || scripts/peers/requirements.txt -nt .venv-peers/.installed ]]; then \
        uv venv -q --allow-existing --python .venv/bin/python .venv-peers \
        && uv pip sync -q --require-hashes --compile-bytecode --python .venv-peers/bin/python scripts/peers/requirements.txt \
        && touch .venv-peers/.installed; \
    fi
    python -m taskforge.bench.peers {{args}}

# apply pending migrations to POSTGRES_DSN
migrate:
    taskforge migrate

# refresh uv.lock after editing pyproject.toml; `--upgrade` moves every pin to the newest allowed
lock *args:
    uv lock {{args}}
