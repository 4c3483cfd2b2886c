"""Support for the tests and the benchmarks (not part of the product): real services in temporary homes.

- `dagster_server`: a Dagster webserver and daemon over a temporary data root, with GraphQL flows.
- `postgres`: a fresh database on the local PostgreSQL server, dropped afterwards.
"""

import os

IN_CI = os.environ.get("CI", "").lower() == "true"
