# The two commands of a fresh machine: `make demo` (main job, embedded defaults) and `make test`.
.PHONY: install demo test ui

install:
	@scripts/bootstrap

demo: install
	.venv/bin/ai-pipeline demo

test: install
	.venv/bin/pytest -q

# The Dagster webserver and daemon on 127.0.0.1:3000, on the instance the demo wrote to (Ctrl-C stops both).
ui: install
	.venv/bin/ai-pipeline ui
