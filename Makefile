# The two commands of a fresh machine: `make demo` (main job, embedded defaults) and `make test`.
.PHONY: install demo test test-fast ui

install:
	@scripts/bootstrap

demo: install
	.venv/bin/ai-pipeline demo

# Everything (what CI runs), on two workers, one test file per worker at a time.
test: install
	.venv/bin/pytest -q -n 2 --dist loadfile --durations=25

# The edit loop: unit and in-process tests, without the `slow` tier (services, dbt, the model, long simulations).
test-fast: install
	.venv/bin/pytest -q -m "not slow"

# The Dagster webserver and daemon on 127.0.0.1:3000, on the instance the demo wrote to (Ctrl-C stops both).
ui: install
	.venv/bin/ai-pipeline ui
