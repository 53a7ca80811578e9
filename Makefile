# The two commands a newcomer needs:
#   make run    start the service (server + local worker) on 127.0.0.1:8980, no config
#   make test   install what the tests need and run the whole suite
.PHONY: run test test-e2e bench protos check-protos lint venv

venv:
	@deploy/bootstrap.sh

run: venv
	.venv/bin/reapi-server $(ARGS)

test:
	@deploy/bootstrap.sh --test
	.venv/bin/python -m pytest $(PYTEST_ARGS)

# Only the end-to-end tests with the real Bazel client (tests marked `bazel`).
test-e2e:
	@deploy/bootstrap.sh --test
	.venv/bin/python -m pytest -m bazel tests/e2e $(PYTEST_ARGS)

bench: venv
	.venv/bin/python -m tests.benchmarks $(ARGS)

protos: venv
	.venv/bin/python -m remote_apis_protos.generate

check-protos: venv
	check=$$(.venv/bin/python -m tests.support.shared contract/check-protos) && $$check .

lint: venv
	.venv/bin/mypy
	.venv/bin/lint-imports
