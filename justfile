# TaskForge tasks. `./run <recipe>` bootstraps .venv first; `just <recipe>` works inside it.
set shell := ["bash", "-euo", "pipefail", "-c"]

export PATH := justfile_directory() + "/.venv/bin:" + env_var("PATH")

# lint, types and the whole test suite: what CI runs
default: check

# API + worker + scheduler in one process, in memory, on HTTP_ADDR (default :8080)
dev *args:
    taskforge dev {{args}}

# the whole test suite (integration tests need TASKFORGE_TEST_POSTGRES_DSN/REDIS_URL or Docker)
test *args:
    pytest {{args}}

# unit tests only: no services needed
unit *args:
    pytest tests/unit {{args}}

lint:
    ruff check .
    ruff format --check .

fmt:
    ruff check --fix .
    ruff format .

typecheck:
    mypy -p taskforge
    mypy tests

check: lint typecheck test

# end to end: the compose stack when Docker answers, else local Postgres and Redis
integration:
    bash scripts/integration-test.sh

# fault injection on private Postgres and Redis: every scenario (about 7 minutes);
# `just faults --profile ci` for the short one, `--scenario storm`, `--seed 7`, `--list`
faults *args:
    python -m tests.faults {{args}}

# the benchmark (README, Performance); add --quick for a short run
bench *args:
    taskforge bench {{args}}

# apply pending migrations to POSTGRES_DSN
migrate:
    taskforge migrate
